"""Device mesh, sharding rules and multi-process start-up. One jitted program over a ``Mesh``.

We do not write a distributed system: the train step is one ``jax.jit`` program over a
``jax.sharding.Mesh`` with named axes, and XLA inserts the collectives (GSPMD / Shardy, "auto"
axes). Multi-host is JAX's multi-controller model: the same command runs on every process and
``jax.distributed.initialize()`` connects them (:func:`maybe_initialize_distributed`).

Mesh axes (``MeshConfig``; -1 = the remaining devices)::

    data    pure data parallelism: batch split, parameters replicated
    fsdp    fully-sharded data parallelism (ZeRO-3): batch split AND parameters / optimiser
            state split along their "embed" dimension; XLA all-gathers them where used
    tensor  tensor (model) parallelism: heads / MLP hidden / vocabulary split

Every sharding decision is in the ONE table below. A parameter gets *logical* axis names from
its path (``PARAM_LOGICAL_AXES``), and ``LOGICAL_AXIS_RULES`` maps logical names to mesh axes.
The optimiser state reuses the rules of the parameter it mirrors (Adam's ``mu``/``nu`` paths
end with the parameter's path), so parameters, gradients and optimiser state are laid out alike.
A dimension that the mesh axis does not divide stays replicated (e.g. a vocabulary of 259).

On one CPU every axis has size 1 and all of this is a no-op.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from repro.config import ConfigError, MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")

# ----------------------------------------------------------------------------- the one table

# Logical axis name -> mesh axis (or axes, or None = replicated).
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),  # activations / data: split over every data-parallel axis
    "embed": "fsdp",  # the model-width dimension of a weight
    "heads": "tensor",  # attention q/k/v output = o input (heads x head_dim)
    "mlp": "tensor",  # MLP hidden
    "vocab": "tensor",
    "table": None,  # rows of a position table
}

# Parameter path (``a/b/0/c`` with list indices, matched at the END of the path) -> logical axes
# of its dimensions. First match wins; every parameter must match (tested for every preset).
PARAM_LOGICAL_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"(^|/)embed/embedding$", ("vocab", "embed")),
    (r"(^|/)pos_tables/\d+/embedding$", ("table", "embed")),
    (r"(^|/)z_linear/kernel$", ("embed", None)),
    (r"(^|/)attn/(q|k|v)/kernel$", ("embed", "heads")),
    (r"(^|/)attn/o/kernel$", ("heads", "embed")),
    (r"(^|/)mlp/up/kernel$", ("embed", "mlp")),
    (r"(^|/)mlp/down/kernel$", ("mlp", "embed")),
    (r"(^|/)logits/kernel$", ("embed", "vocab")),
    # Biases and LayerNorm scale/offset: small vectors, replicated.
    (r"(^|/)(bias|scale)$", (None,)),
)

_COMPILED_RULES = [(re.compile(p), axes) for p, axes in PARAM_LOGICAL_AXES]


# ----------------------------------------------------------------------------- mesh


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes for ``n_devices``; at most one axis may be -1 (= the rest)."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    if sizes.count(-1) > 1:
        raise ConfigError("at most one of mesh.data / mesh.fsdp / mesh.tensor may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh sizes must be >= 1 or -1, got {dict(zip(MESH_AXES, sizes, strict=True))}")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % fixed:
            raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} does not divide {n_devices} device(s)")
        sizes[sizes.index(-1)] = n_devices // fixed
    if math.prod(sizes) > n_devices:
        raise ConfigError(
            f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
            f"only {n_devices} available"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh over the first prod(sizes) devices (all, with a -1)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(cfg, len(devices))
    n = math.prod(shape)
    # Auto axes: the compiler propagates shardings from the annotated inputs/outputs of the step.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[:n])


def mesh_axis_size(mesh: Mesh, axes: str | tuple[str, ...] | None) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


# ----------------------------------------------------------------------------- shardings


def path_str(path: Sequence[Any]) -> str:
    """A key path as ``a/b/0/c`` (dict keys, attribute names and list indices; no ``value``)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            if k.name != "value":
                parts.append(k.name)
        else:
            parts.append(str(k))
    return "/".join(parts)


def param_logical_axes(path: str, ndim: int) -> tuple[str | None, ...] | None:
    """Logical axes of the parameter at ``path`` (None if no rule matches)."""
    for rx, axes in _COMPILED_RULES:
        if rx.search(path):
            if len(axes) != ndim:
                raise ValueError(f"sharding rule {rx.pattern} has {len(axes)} axes, {path} has {ndim} dims")
            return axes
    return None


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> P:
    """PartitionSpec for logical ``axes``; a dimension the mesh axis does not divide is replicated."""
    spec, used = [], set()
    for name, dim in zip(axes, shape, strict=True):
        mesh_axes = LOGICAL_AXIS_RULES.get(name) if name else None
        size = mesh_axis_size(mesh, mesh_axes)
        flat = (mesh_axes,) if isinstance(mesh_axes, str) else (mesh_axes or ())
        if mesh_axes is None or size == 1 or dim % size or used & set(flat):
            spec.append(None)
        else:
            spec.append(mesh_axes)
            used |= set(flat)
    return P(*spec)


def state_shardings(tree: Any, mesh: Mesh, *, strict: bool = True) -> Any:
    """NamedShardings for a tree of parameters or optimiser state (arrays or ShapeDtypeStructs).

    Scalars (e.g. Adam's step count) are replicated. With ``strict``, a non-scalar leaf that no
    rule matches raises (a new parameter must get a row in ``PARAM_LOGICAL_AXES``).
    """

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        if not shape:
            return NamedSharding(mesh, P())
        p = path_str(path)
        axes = param_logical_axes(p, len(shape))
        if axes is None:
            if strict:
                raise ValueError(f"no sharding rule for parameter '{p}' {shape}; add one to PARAM_LOGICAL_AXES")
            axes = (None,) * len(shape)
        return NamedSharding(mesh, logical_to_spec(axes, shape, mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data-parallel axes (``LOGICAL_AXIS_RULES['batch']``)."""
    return NamedSharding(mesh, P(LOGICAL_AXIS_RULES["batch"]))


def batch_divisor(mesh: Mesh) -> int:
    """The global (micro-)batch must be a multiple of this."""
    return mesh_axis_size(mesh, LOGICAL_AXIS_RULES["batch"])


def process_batch_block(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
    """(block index, number of blocks): this process's rows of the global batch are block
    ``index`` of ``count`` equal contiguous blocks, as ``make_array_from_process_local_data``
    expects. Processes that hold replicas of the same rows get the same block."""
    idx = sharding.addressable_devices_indices_map((global_batch,))
    starts = sorted({(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop) for s in idx.values()})
    lo, hi = starts[0][0], starts[-1][1]
    rows = hi - lo
    covered = sum(b - a for a, b in starts)
    if covered != rows or global_batch % rows or lo % rows:
        raise ValueError(f"this process's batch rows {starts} are not one contiguous block of {global_batch}")
    return lo // rows, global_batch // rows


def describe(mesh: Mesh) -> str:
    return " x ".join(f"{a}={mesh.shape[a]}" for a in MESH_AXES) + f" ({mesh.devices.size} devices)"


# ----------------------------------------------------------------------------- multi-process


def detect_launcher(env: dict[str, str] | None = None) -> str | None:
    """The multi-process launcher we are running under, if any (then the same command runs once
    per process and :func:`maybe_initialize_distributed` connects them)."""
    env = dict(os.environ if env is None else env)

    def count(*names: str) -> int:
        for n in names:
            if env.get(n, "").isdigit():
                return int(env[n])
        return 1

    # srun sets SLURM_STEP_NUM_TASKS; a batch script alone (one process) has only SLURM_NTASKS.
    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and count("SLURM_STEP_NUM_TASKS") > 1:
        return "slurm"
    if count("OMPI_COMM_WORLD_SIZE") > 1:
        return "openmpi"
    if "," in env.get("TPU_WORKER_HOSTNAMES", "") or count("MEGASCALE_NUM_SLICES") > 1:
        return "tpu-pod"
    return None


def maybe_initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    force: bool = False,
) -> str | None:
    """Call ``jax.distributed.initialize`` if asked to (explicit coordinator / ``force``) or if a
    launcher is detected; returns how it was initialised, or None for a single process.

    Must run before any JAX computation. Explicit arguments need all three of coordinator
    (``host:port`` of process 0), number of processes and this process's id.
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ConfigError("--coordinator, --num-processes and --process-id must be given together")
        assert num_processes is not None and process_id is not None
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} is not in [0, {num_processes})")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator must be host:port, got '{coordinator}'")
        jax.distributed.initialize(coordinator, num_processes, process_id)
        return f"explicit ({num_processes} processes, coordinator {coordinator})"
    launcher = detect_launcher()
    if force or launcher:
        jax.distributed.initialize()  # TPU, Slurm and Open MPI: arguments are auto-detected
        return launcher or "auto-detected"
    return None
