"""Loss, the jitted train step and the jitted eval step.

The model is carried as ``(graphdef, params)`` (``nnx.split``); steps are pure functions of
``(params, opt_state, batch, step)`` jitted once over the mesh with donated state. Dropout
keys are ``fold_in(seed_key, step)``, so a step is reproducible and resume is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from repro.config import Experiment
from repro.data.tokens import PAD_ID
from repro.parallel import batch_sharding, replicated

Batch = dict[str, jax.Array]


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


def _forward(graphdef, params, batch: Batch, rng, positions_from_data: bool):
    model = nnx.merge(graphdef, params)
    pos = batch["positions"] if positions_from_data else None
    return model(batch["inputs"], pos, rng=rng)


@dataclasses.dataclass
class Steps:
    train: Callable[..., Any]
    eval: Callable[..., Any]


def make_steps(exp: Experiment, graphdef, tx: optax.GradientTransformation, mesh: Mesh) -> Steps:
    """Jitted ``train(params, opt_state, batch, step) -> (params, opt_state, metrics)`` and
    ``eval(params, batch) -> per-token (nll, correct, mask)``."""
    o, t, pfd = exp.optim, exp.train, exp.model.positions_from_data
    base_key = jax.random.key(t.seed)
    A = t.grad_accum

    def sum_loss(params, batch, rng):
        logits = _forward(graphdef, params, batch, rng, pfd)
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
            micro = jax.tree.map(lambda x: x.reshape(A, x.shape[0] // A, *x.shape[1:]), batch)

            def body(carry, xs):
                mb, i = xs
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
        metrics = {
            "loss": aux["nll_sum"] / jnp.maximum(aux["tokens"], 1.0),  # nats / target token
            "accuracy": aux["correct"] / jnp.maximum(aux["tokens"], 1.0),
            "tokens": aux["tokens"],
            "grad_norm": optax.global_norm(grads),
        }
        return params, opt_state, metrics

    def eval_step(params, batch):
        logits = _forward(graphdef, params, batch, None, pfd)
        _, nll, correct, mask = token_losses(logits, batch["targets"], z_loss=0.0, label_smoothing=0.0)
        return nll, correct, mask

    rep, data = replicated(mesh), batch_sharding(mesh)
    train = jax.jit(
        train_step,
        in_shardings=(rep, rep, data, rep),
        out_shardings=(rep, rep, rep),
        donate_argnums=(0, 1),
    )
    evaluate = jax.jit(eval_step, in_shardings=(rep, data), out_shardings=(data, data, data))
    return Steps(train=train, eval=evaluate)
