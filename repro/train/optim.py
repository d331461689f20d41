"""The optimiser as the official code builds it (experiment.py ``_make_optimizer``).

clip_by_global_norm(1.0) -> scale_by_adam(b1=0.9, b2=0.999, eps=1e-8) -> learning-rate schedule.
No weight decay in any released config (``weight_decay`` > 0 switches to decoupled AdamW decay).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from repro.config import OptimConfig


def learning_rate_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then constant / cosine / rsqrt."""
    warm = max(cfg.warmup_steps, 0)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, max(cfg.decay_steps - warm, 1))
    elif cfg.schedule == "rsqrt":
        # T5-style inverse square root, continuous with the warm-up: lr * sqrt(warm / step).
        w = max(warm, 1)
        after = lambda count: cfg.lr * jnp.sqrt(w / (jnp.asarray(count, jnp.float32) + w))
    else:  # validated by the config's Literal type
        raise ValueError(cfg.schedule)
    if warm == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm), after], [warm])


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    parts = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(optax.scale_by_learning_rate(learning_rate_schedule(cfg)))
    return optax.chain(*parts)
