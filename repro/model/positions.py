"""Position encodings: partial rotary, absolute sinusoidal, absolute learned tables.

Positions are integers per token and per position dimension (``pos_BxLxP``). They come either
from the data (1-D document offsets, or (x, y, channel) for images: one table per dimension,
summed, as the official ``use_positions_from_data``) or are implicit. Implicit positions are
*terminal-relative* as in the official code: the last input has position 0, the one before it 1,
and so on. That makes the model's output independent of left padding.

Both frequency ladders are the official ones (``google-research/perceiver-ar``,
``perceiver_ar/perceiver_ar_model.py``):

* rotary (``_make_rotation_matrices``): ``num_bands = R // 2`` over the R rotated channels of a
  head, ``freq = W ** ((2 / R) * linspace(0, num_bands, num_bands))``. ``linspace`` includes its
  endpoint, so the inverse frequencies are ``W ** (-i / (num_bands - 1))``: 1 down to exactly 1/W,
  with W = ``max_wavelength`` (official config: the context length).
* sinusoidal (``generate_sinusoidal_features(size, max_len)``, ``min_scale=1``,
  ``max_scale=10000``): ``exp(i * -log(10000) / (size // 2 - 1))``, i.e. ``10000 ** (-i / (h - 1))``
  for the h = size // 2 channel pairs, sin in the first h channels, cos in the next h (a last odd
  channel is 0). The wavelengths reach exactly 2*pi*10,000 whatever the context. The official table
  row p is this function at the integer position p (rows 0 .. max_len - 1, computed in float64);
  here it is computed on the fly, to float32 accuracy at any position (see ``sinusoidal_features``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Official generate_sinusoidal_features(max_scale=10000.0), the value every config uses.
SINUSOIDAL_MAX_WAVELENGTH = 10_000.0


def implicit_positions(B: int, L: int, idx_T=None):
    """Terminal-relative positions [B, T, 1] of the inputs at window indices ``idx_T`` of an
    L-input window: L - 1 - idx (the last input is 0; default: the whole window, L-1, ..., 1, 0).
    The KV cache continues them past the window (negative) for decoded inputs
    (``repro/model/cache.py``). A host (numpy) array when ``idx_T`` is (or is omitted): known when
    the model is traced, so the rotary cos / sin of these positions are constants of the compiled
    step (``rotary_cos_sin``) instead of being recomputed inside every fusion that reads them."""
    if idx_T is None:
        idx_T = np.arange(L, dtype=np.int32)
    xp = np if isinstance(idx_T, np.ndarray) else jnp
    pos_T = (L - 1 - idx_T).astype(np.int32)
    return xp.broadcast_to(pos_T[None, :, None], (B, idx_T.shape[0], 1))


def sinusoidal_inverse_frequencies(dim: int, max_wavelength: float = SINUSOIDAL_MAX_WAVELENGTH) -> np.ndarray:
    """The official table's angular frequencies (float64) for a ``dim``-wide table: ``dim // 2``
    values ``max_wavelength ** (-i / (dim // 2 - 1))``, 1 down to exactly 1 / max_wavelength.
    (With a single pair the official formula divides by zero; here that pair has frequency 1.)"""
    half = dim // 2
    if half < 2:
        return np.ones(half)
    return np.exp(np.arange(half) * (-np.log(max_wavelength) / (half - 1)))


def rotary_inverse_frequencies(rotated: int, max_wavelength: float) -> np.ndarray:
    """The official rotary angular frequencies (float64) for ``rotated`` (even) channels:
    ``rotated // 2`` values ``max_wavelength ** (-i / (rotated // 2 - 1))``, 1 down to exactly
    1 / max_wavelength (one pair: frequency 1, as the official ``linspace(0, 1, 1) = [0]``)."""
    bands = rotated // 2
    if bands < 2:
        return np.ones(bands)
    return float(max_wavelength) ** (-np.arange(bands) / (bands - 1))


def sinusoidal_features(pos_BxL: jax.Array, dim: int, max_wavelength: float = SINUSOIDAL_MAX_WAVELENGTH) -> jax.Array:
    """[sin(p * f_i), cos(p * f_i)] (+ a zero channel if ``dim`` is odd): the official table's row p.

    The official table is computed in float64 and stored; a float32 ``p * f`` loses the angle at
    large positions (ulp(131072) = 1/128, i.e. errors up to ~4e-3 in the features). So the angle is
    reduced modulo one turn exactly: with the turns per position ``t = f / 2pi = (T_hi + t_lo) / 2^32``
    (T_hi an integer, fixed in float64), ``p * T_hi mod 2^32`` is exact in wrapping uint32
    arithmetic and ``p * t_lo`` is below half a turn; the features then match the float64 table to
    ~1e-6 at every position up to 2^31.
    """
    turns = sinusoidal_inverse_frequencies(dim, max_wavelength) / (2 * np.pi)  # < 1 turn per step
    scaled = turns * 2.0**32
    t_hi = np.floor(scaled)
    t_lo = (scaled - t_hi) * 2.0**-32
    p = pos_BxL[..., None]
    whole = p.astype(jnp.uint32) * jnp.asarray(t_hi.astype(np.uint32))  # (p * T_hi) mod 2^32
    frac = whole.astype(jnp.float32) * 2.0**-32 + p.astype(jnp.float32) * jnp.asarray(t_lo, jnp.float32)
    ang_BxLxF = (2 * np.pi) * (frac - jnp.round(frac))  # in [-pi, pi]
    feats = jnp.concatenate([jnp.sin(ang_BxLxF), jnp.cos(ang_BxLxF)], axis=-1)
    if dim % 2:
        feats = jnp.pad(feats, [(0, 0)] * (feats.ndim - 1) + [(0, 1)])
    return feats


def rotary_dims(head_dim: int, fraction: float) -> int:
    """Number of channels of each head that are rotated (even, as pairs rotate together)."""
    return int(head_dim * fraction) // 2 * 2


def rotary_permutation(head_dim: int, fraction: float) -> np.ndarray:
    """Our channel c of a head is the official channel ``perm[c]`` (same rotary function).

    The official code pairs channels (2j, 2j+1) of the rotated block (``_splice_array``); ours
    pairs (j, j + R/2) ("rotate-half"). Pair j has the same frequency in both, so q / k projection
    columns taken in this order (per head) give exactly the official attention scores."""
    R = rotary_dims(head_dim, fraction)
    half = R // 2
    perm = np.arange(head_dim)
    perm[:half] = 2 * np.arange(half)
    perm[half:R] = 2 * np.arange(half) + 1
    return perm


def rotary_cos_sin(pos_BxT: jax.Array | np.ndarray, rotated: int, max_wavelength: float):
    """cos and sin [B, T, rotated // 2] of the float32 angles ``pos * f_i`` (official ladder).

    Positions known at trace time (a numpy array: implicit positions, ``implicit_positions``)
    give constants, computed once on the host in float32 (one row when every row is the same):
    XLA:CPU otherwise fuses the cos / sin into each consumer and recomputes them for every head
    and channel pair, forward and backward (~4 % of a training step at N = 1024,
    ``docs/efficiency.md``). Traced positions (from the data) are computed in the graph."""
    freqs = rotary_inverse_frequencies(rotated, max_wavelength).astype(np.float32)
    if isinstance(pos_BxT, np.ndarray):
        rows = pos_BxT[:1] if (pos_BxT == pos_BxT[:1]).all() else pos_BxT
        ang = rows.astype(np.float32)[..., None] * freqs
        shape = (*pos_BxT.shape, freqs.size)
        return (jnp.broadcast_to(jnp.asarray(np.cos(ang)), shape), jnp.broadcast_to(jnp.asarray(np.sin(ang)), shape))
    ang_BxTxF = pos_BxT.astype(jnp.float32)[..., None] * jnp.asarray(freqs)
    return jnp.cos(ang_BxTxF), jnp.sin(ang_BxTxF)


def apply_rotary(x_BxTxHxK: jax.Array, pos_BxT: jax.Array | np.ndarray, fraction: float, max_wavelength: float):
    """Rotate the first ``fraction`` of each head's channels by angles pos * f_i (official ladder).

    Channel pairs are (i, i + R/2) within the rotated block of R channels ("rotate-half"
    layout, see ``rotary_permutation``); the remaining K - R channels pass through unchanged, as
    in the official ``_apply_rotary_encoding_to_subset``. Because q.k then depends only on
    position differences, rotary attention is invariant to a shift of all positions. The angles
    are float32 ``pos * f`` as in the official code.
    """
    R = rotary_dims(x_BxTxHxK.shape[-1], fraction)
    if R == 0:
        return x_BxTxHxK
    half = R // 2
    cos_BxTxF, sin_BxTxF = rotary_cos_sin(pos_BxT, R, max_wavelength)
    cos, sin = cos_BxTxF[:, :, None, :], sin_BxTxF[:, :, None, :]
    rot, rest = x_BxTxHxK[..., :R], x_BxTxHxK[..., R:]
    x1, x2 = rot[..., :half].astype(jnp.float32), rot[..., half:].astype(jnp.float32)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxTxHxK.dtype)
    return jnp.concatenate([rotated, rest], axis=-1)
