"""Position encodings: partial rotary, absolute sinusoidal, absolute learned tables.

Positions are integers per token and per position dimension (``pos_BxLxP``). They come either
from the data (1-D document offsets, or (x, y, channel) for images: one table per dimension,
summed, as the official ``use_positions_from_data``) or are implicit. Implicit positions are
*terminal-relative* as in the official code: the last input has position 0, the one before it 1,
and so on. That makes the model's output independent of left padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def implicit_positions(B: int, L: int) -> jax.Array:
    """Terminal-relative positions [B, L, 1]: L-1, ..., 1, 0."""
    pos_L = jnp.arange(L - 1, -1, -1, dtype=jnp.int32)
    return jnp.broadcast_to(pos_L[None, :, None], (B, L, 1))


def sinusoidal_features(pos_BxL: jax.Array, dim: int, max_wavelength: float) -> jax.Array:
    """[sin(p / w_i), cos(p / w_i)] with wavelengths geometric from 2*pi up to max_wavelength."""
    half = dim // 2
    freqs_F = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / max(half, 1))
    ang_BxLxF = pos_BxL[..., None].astype(jnp.float32) * freqs_F
    feats = jnp.concatenate([jnp.sin(ang_BxLxF), jnp.cos(ang_BxLxF)], axis=-1)
    if dim % 2:
        feats = jnp.pad(feats, [(0, 0), (0, 0), (0, 1)])
    return feats


def rotary_dims(head_dim: int, fraction: float) -> int:
    """Number of channels of each head that are rotated (even, as pairs rotate together)."""
    return int(head_dim * fraction) // 2 * 2


def apply_rotary(x_BxTxHxK: jax.Array, pos_BxT: jax.Array, fraction: float, max_wavelength: float):
    """Rotate the first ``fraction`` of each head's channels by angles pos / wavelength_i.

    Channel pairs are (i, i + R/2) within the rotated block of R channels ("rotate-half"
    layout); the remaining K - R channels pass through unchanged, as in the official
    ``_apply_rotary_encoding_to_subset``. Because q.k then depends only on position
    differences, rotary attention is invariant to a shift of all positions.
    """
    K = x_BxTxHxK.shape[-1]
    R = rotary_dims(K, fraction)
    if R == 0:
        return x_BxTxHxK
    half = R // 2
    freqs_F = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
    ang_BxTx1xF = (pos_BxT.astype(jnp.float32)[..., None] * freqs_F)[:, :, None, :]
    cos, sin = jnp.cos(ang_BxTx1xF), jnp.sin(ang_BxTx1xF)
    rot, rest = x_BxTxHxK[..., :R], x_BxTxHxK[..., R:]
    x1, x2 = rot[..., :half].astype(jnp.float32), rot[..., half:].astype(jnp.float32)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxTxHxK.dtype)
    return jnp.concatenate([rotated, rest], axis=-1)
