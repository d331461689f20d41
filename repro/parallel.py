"""Device mesh and shardings. One jitted program over a ``jax.sharding.Mesh``.

On one CPU the mesh is ('data',) of size 1 and every annotation is a no-op; on a pod the same
code runs data-parallel: the batch is split over 'data', parameters are replicated.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from repro.config import MeshConfig


def make_mesh(cfg: MeshConfig) -> Mesh:
    n = jax.device_count()
    data = n if cfg.data == -1 else cfg.data
    if data < 1 or data > n or n % data:
        raise ValueError(f"mesh.data={cfg.data} does not fit {n} device(s)")
    # Auto axes: the compiler propagates shardings from the annotated inputs/outputs of the step.
    return jax.make_mesh((data,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:data])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, P("data"))
