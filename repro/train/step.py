"""Loss, the jitted train step and the jitted eval step.

The model is carried as ``(graphdef, params)`` (``nnx.split``); steps are pure functions of
``(params, opt_state, batch, step)`` jitted once over the mesh with donated state and explicit
in/out shardings (``repro/parallel.py``). Dropout keys are ``fold_in(seed_key, step)``, so a step
is reproducible and resume is exact.

Mixed precision (``model.compute_dtype="bfloat16"``): parameters and optimiser state stay
float32; the step runs the model on a bfloat16 copy of the parameters (:func:`cast_for_compute`,
the cast is differentiated, so gradients arrive in float32) except the final logits layer, so
logits, softmax and loss are float32. Attention scores and softmax are float32 in either mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from repro.config import Experiment, resolve_compute_dtype
from repro.data.tokens import PAD_ID
from repro.parallel import batch_sharding, path_str, replicated

Batch = dict[str, jax.Array]

# Parameters that stay float32 under bfloat16 compute: the logits projection.
KEEP_F32 = ("logits/",)


def token_losses(logits_BxMxV, targets_BxM, *, z_loss: float, label_smoothing: float):
    """Per-token (training loss, NLL in nats, correct) with PAD targets giving zeros.

    Training loss = cross-entropy against (optionally smoothed) one-hot targets
    + ``z_loss * logsumexp(logits)**2`` (T5X z-loss, as the official ``losses.py``).
    The NLL is always the plain, unsmoothed negative log-likelihood: that is what we report.
    """
    V = logits_BxMxV.shape[-1]
    logits = logits_BxMxV.astype(jnp.float32)
    log_z_BxM = jax.nn.logsumexp(logits, axis=-1)
    logp_target = jnp.take_along_axis(logits, targets_BxM[..., None], axis=-1)[..., 0] - log_z_BxM
    nll_BxM = -logp_target
    if label_smoothing > 0:
        soft = optax.smooth_labels(jax.nn.one_hot(targets_BxM, V), label_smoothing)
        ce_BxM = optax.softmax_cross_entropy(logits, soft)
    else:
        ce_BxM = nll_BxM
    mask = (targets_BxM != PAD_ID).astype(jnp.float32)
    loss_BxM = (ce_BxM + z_loss * jnp.square(log_z_BxM)) * mask
    correct_BxM = (jnp.argmax(logits, axis=-1) == targets_BxM).astype(jnp.float32) * mask
    return loss_BxM, nll_BxM * mask, correct_BxM, mask


def cast_for_compute(params: Any, compute_dtype: str) -> Any:
    """The parameters the model runs on: float32 as stored, or a bfloat16 copy of every floating
    parameter except the logits layer (``KEEP_F32``). Differentiable; a no-op for float32."""
    dtype = jnp.dtype(resolve_compute_dtype(compute_dtype))
    if dtype == jnp.float32:
        return params

    def one(path, x):
        if not jnp.issubdtype(x.dtype, jnp.floating) or path_str(path).startswith(KEEP_F32):
            return x
        return x.astype(dtype)

    return jax.tree_util.tree_map_with_path(one, params)


def _forward(graphdef, params, batch: Batch, rng, exp: Experiment):
    model = nnx.merge(graphdef, cast_for_compute(params, exp.model.compute_dtype))
    pos = batch["positions"] if exp.model.positions_from_data else None
    return model(batch["inputs"], pos, rng=rng)


def all_finite(tree) -> jax.Array:
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


@dataclasses.dataclass
class Steps:
    """``train``: the jitted train step (has ``.lower`` for AOT compilation / dry runs).
    ``eval``: takes host (numpy) batches identical on every process, returns host-readable
    per-token (nll, correct, mask). ``eval_jit``: the jitted eval step behind it."""

    train: Callable[..., Any]
    eval: Callable[..., Any]
    eval_jit: Callable[..., Any]


def make_steps(
    exp: Experiment,
    graphdef,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    param_shardings: Any = None,
    opt_shardings: Any = None,
) -> Steps:
    """Jitted ``train(params, opt_state, batch, step) -> (params, opt_state, metrics)`` and
    ``eval(params, batch) -> per-token (nll, correct, mask)``.

    ``param_shardings`` / ``opt_shardings`` are trees of NamedShardings (``parallel.state_shardings``);
    None = replicated. Metrics include ``finite``: loss, gradients and the updated parameters
    are all finite (the loop stops a run, keeping its last good checkpoint, when they are not).
    """
    o, t = exp.optim, exp.train
    base_key = jax.random.key(t.seed)
    A = t.grad_accum
    rep, data = replicated(mesh), batch_sharding(mesh)  # ``data`` is used by the closures below
    param_shardings = rep if param_shardings is None else param_shardings
    opt_shardings = rep if opt_shardings is None else opt_shardings

    def sum_loss(params, batch, rng):
        # Keep the logits batch-sharded (a hint for XLA's sharding propagation).
        logits = jax.lax.with_sharding_constraint(_forward(graphdef, params, batch, rng, exp), data)
        loss, nll, correct, mask = token_losses(
            logits, batch["targets"], z_loss=o.z_loss, label_smoothing=o.label_smoothing
        )
        return loss.sum(), {"nll_sum": nll.sum(), "correct": correct.sum(), "tokens": mask.sum()}

    grad_fn = jax.grad(sum_loss, has_aux=True)

    def train_step(params, opt_state, batch, step):
        rng = jax.random.fold_in(base_key, step)
        if A == 1:
            grads, aux = grad_fn(params, batch, rng)
        else:
            # Gradient accumulation: scan over A micro-batches, summing gradients and counts.
            # Micro-batch a = rows a, a+A, ... so that every micro-batch spans all data shards.
            micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // A, A, *x.shape[1:]).swapaxes(0, 1), batch)

            def body(carry, xs):
                mb, i = xs
                mb = jax.lax.with_sharding_constraint(mb, data)
                g, a = grad_fn(params, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (g, a)), None

            zeros = (
                jax.tree.map(jnp.zeros_like, params),
                {"nll_sum": 0.0, "correct": 0.0, "tokens": 0.0},
            )
            (grads, aux), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(A)))
        if o.loss_normalization == "mean":
            grads = jax.tree.map(lambda g: g / jnp.maximum(aux["tokens"], 1.0), grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        loss = aux["nll_sum"] / jnp.maximum(aux["tokens"], 1.0)  # nats / target token
        grad_norm = optax.tree.norm(grads)
        metrics = {
            "loss": loss,
            "accuracy": aux["correct"] / jnp.maximum(aux["tokens"], 1.0),
            "tokens": aux["tokens"],
            "grad_norm": grad_norm,
            "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params),
        }
        return params, opt_state, metrics

    def eval_step(params, batch):
        logits = _forward(graphdef, params, batch, None, exp)
        _, nll, correct, mask = token_losses(logits, batch["targets"], z_loss=0.0, label_smoothing=0.0)
        return nll, correct, mask

    train = jax.jit(
        train_step,
        in_shardings=(param_shardings, opt_shardings, data, rep),
        out_shardings=(param_shardings, opt_shardings, rep),
        donate_argnums=(0, 1),
    )
    # Replicated outputs: every process can read them (they are small: B x M).
    eval_jit = jax.jit(eval_step, in_shardings=(param_shardings, data), out_shardings=(rep, rep, rep))

    def evaluate(params, batch: dict[str, np.ndarray]):
        """Eval on a host batch that every process holds in full (eval data are deterministic)."""
        arrays = {
            k: jax.make_array_from_callback(np.shape(v), data, lambda idx, v=v: np.asarray(v)[idx])
            for k, v in batch.items()
        }
        return eval_jit(params, arrays)

    return Steps(train=train, eval=evaluate, eval_jit=eval_jit)
