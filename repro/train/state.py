"""A built run: the model graph, its parameters and optimiser state, their shardings and the
jitted steps (:func:`build`). Training (``repro.train.loop``), evaluation, sampling, dry runs,
benchmarks and the official-checkpoint import all build runs here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from repro import config
from repro.model import PerceiverAR, count_params
from repro.parallel import batch_divisor, describe, make_mesh, state_shardings
from repro.train.optim import make_optimizer
from repro.train.step import Steps, make_steps

__all__ = ["Run", "build"]


@dataclass
class Run:
    """A built run: model graph, parameters, optimiser state, shardings and jitted steps.

    ``params`` / ``opt_state`` are arrays, or their ``abstract`` shapes (ShapeDtypeStructs with
    shardings) for a run built with ``init=False``; training replaces them after every step."""

    exp: config.Experiment
    graphdef: nnx.GraphDef
    params: Any  # nnx.State of arrays (or of ShapeDtypeStructs)
    opt_state: Any  # optax state of arrays (or of ShapeDtypeStructs)
    steps: Steps
    mesh: Mesh
    num_params: int
    param_shardings: Any = None  # a pytree of NamedShardings, like params
    opt_shardings: Any = None  # a pytree of NamedShardings, like opt_state
    tx: optax.GradientTransformation | None = None
    abstract: dict[str, Any] = field(default_factory=dict)  # {"params", "opt_state"}: ShapeDtypeStructs

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds: ``{"params", "opt_state"}``."""
        return {"params": self.params, "opt_state": self.opt_state}


def _with_sharding(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def build(exp: config.Experiment, *, mesh: Mesh | None = None, init: bool = True) -> Run:
    """Shapes first, then shardings, then a jitted, sharded initialisation: the model is never
    materialised on one device. ``init=False`` leaves ``params`` / ``opt_state`` abstract
    (ShapeDtypeStructs with shardings), for dry runs and for restoring a checkpoint."""
    mesh = mesh or make_mesh(exp.mesh)
    micro = exp.train.batch_size // exp.train.grad_accum
    if micro % batch_divisor(mesh):
        raise config.ConfigError(
            f"the (micro-)batch of {micro} rows cannot be split over the mesh's {batch_divisor(mesh)} "
            f"data-parallel devices ({describe(mesh)}); change train.batch_size or the mesh"
        )
    p = _parts(exp, mesh)
    if init:
        params = p.init_params()
        opt_state = p.init_opt(params)
    else:
        params, opt_state = p.abstract["params"], p.abstract["opt_state"]
    return Run(
        exp=exp, graphdef=p.graphdef, params=params, opt_state=opt_state, steps=p.steps, mesh=mesh,
        num_params=p.num_params, param_shardings=p.param_sh, opt_shardings=p.opt_sh, tx=p.tx, abstract=p.abstract,
    )  # fmt: skip


@dataclass(frozen=True)
class _Parts:
    """Everything of a build but the state."""

    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    param_sh: Any
    opt_sh: Any
    abstract: dict[str, Any]
    num_params: int
    init_params: Any  # jitted () -> params
    init_opt: Any  # jitted params -> opt_state
    steps: Steps


@functools.lru_cache(maxsize=8)
def _parts(exp: config.Experiment, mesh: Mesh) -> _Parts:
    """Everything of a build but the state, cached per (experiment, mesh): building the same run
    twice in a process (tests, eval after train) reuses the compiled init and step functions."""
    seed = exp.train.seed

    def make_model():
        return PerceiverAR(exp.model, rngs=nnx.Rngs(seed))

    abstract_model = nnx.eval_shape(make_model)
    graphdef, abstract_params = nnx.split(abstract_model)
    tx = make_optimizer(exp.optim)
    param_sh = state_shardings(abstract_params, mesh)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_sh = state_shardings(abstract_opt, mesh)
    return _Parts(
        graphdef=graphdef,
        tx=tx,
        param_sh=param_sh,
        opt_sh=opt_sh,
        abstract={
            "params": _with_sharding(abstract_params, param_sh),
            "opt_state": _with_sharding(abstract_opt, opt_sh),
        },
        num_params=count_params(abstract_model),
        init_params=jax.jit(lambda: nnx.state(make_model()), out_shardings=param_sh),
        init_opt=jax.jit(tx.init, out_shardings=opt_sh),
        steps=make_steps(exp, graphdef, tx, mesh, param_sh, opt_sh),
    )
