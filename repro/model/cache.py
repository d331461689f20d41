"""KV-cached decoding for Perceiver AR: ``prefill`` a window, then ``decode_step`` one token at a time.

The cache is a fixed-size pytree (jit- and loop-friendly):

    cross_k/v   (B Hc) x L x Kc   keys/values of the L inputs of the last prefill (read-only after it)
    cross_idx   L                 cache index of each slot (for the causal mask)
    cross_valid B x L             slot holds a real (non-PAD) input
    new_k/v     (B Hc) x M x Kc   keys/values of the inputs decoded since the prefill (slot t - L)
    new_valid   B x M             slot holds a decoded, non-PAD input
    self_k/v    N-tuple of (B H) x M x K: keys/values of each latent self-attention layer
    lat_idx     M                 cache index of each latent slot
    lat_valid   B x M             slot holds a latent on a real token
    n           ()                latents in use (slots 0 .. n-1)
    t           ()                cache index of the next input (prefill windows are always L
                                  long, left-padded with PAD, so t starts at L)

One implementation of each block: ``prefill`` and ``decode_step`` run the model's own
block code (``repro/model/perceiver_ar.py``: ``CrossAttendBlock.queries`` / ``project_kv``,
``SelfAttendBlock.project``, then ``attend`` and ``finish``, as the blocks' ``__call__`` does) and
keep only the cache bookkeeping: slots, masks, indices, and, for the cross-attend (and every
attention of ``decode_step``), the softmax over the cache's segments in the cache's layout
(``attention.segment_attention``, the dense path's own rule, in the cache's row layout) in place
of the block's ``attend``.

Keys are stored after rotary encoding, head-major, with batch and heads merged into one leading
axis of A = B x H rows (a one-query attention over a [B, L, H, K] cache is ~6x slower on a CPU at
L = 16k: the einsum transposes the whole cache; and with a separate batch axis, a batch of one
makes that axis degenerate, which XLA removes with a bitcast that it then fuses into copies of
every written buffer at every step). Decoded inputs go to the small ``new_*`` buffers (at most
M - 1 between resets, as latents), so the L-long buffers are never written inside the decoding
loop and XLA does not copy them at every step (it does when a buffer is both read and updated in
one step: 2 x 8 MB per step at L = 16k). Cache indices are local to one prefill: a reset re-bases
them (and, for implicit rotary positions, the positions: see below).

Equivalence (tested, ``tests/test_sampling.py``): after ``prefill(window, num_latents=F)`` and k
decode steps, the logits equal those of a full forward over the same inputs with
``num_latents = F + k`` (= ``n``) while no input has left the L-input window: a latent computed at
step j saw the latents from the prefill's first one up to itself, exactly as in that full forward.
The paper's sampler (Appendix E.3; official ``sample_utils.sample_position``) resets the cache with
a full forward whenever the latent cache is full (n = M), refilling F latents (official: M / 2).
(Moving the L - 1 keys / values the cache already holds into the new window, re-encoding their
rotary positions, instead of recomputing them, was tried: no faster than this ``prefill``, whose
rotary cos / sin are constants; ``docs/efficiency.md``.)

Positions. The model's implicit positions are terminal-relative (last input = 0), which moves
every input's position by one with each new token. For rotary encodings only differences of
positions matter, so the cache gives the input with cache index i the position ``L - 1 - i``:
exactly the prefill window's terminal-relative positions, continued (negative) for decoded
tokens; every q.k is the same as in the full forward. Absolute (sinusoidal / learned) encodings
with implicit positions would need every cached key recomputed at every step: they are refused
here (``supports_cache``) and the sampler recomputes the full forward instead. Positions from
the data (any encoding) are passed in with every token.

Sliding window: when more than L inputs have been seen, the oldest prefilled inputs are masked
out (index <= t - L), so the new latent's cross-attend sees exactly the window of a full forward;
latents already in the cache keep what they computed from their own windows (a reset makes
everything exact again).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from repro.data.tokens import PAD_ID
from repro.model.attention import ROWS_LAYOUT as ROWS
from repro.model.attention import make_mask, segment_attention
from repro.model.positions import implicit_positions


class Cache(NamedTuple):
    cross_k: jax.Array
    cross_v: jax.Array
    cross_idx: jax.Array
    cross_valid: jax.Array
    new_k: jax.Array
    new_v: jax.Array
    new_valid: jax.Array
    self_k: jax.Array
    self_v: jax.Array
    lat_idx: jax.Array
    lat_valid: jax.Array
    n: jax.Array
    t: jax.Array


def supports_cache(cfg) -> bool:
    """Rotary (any positions), or positions from the data (any encoding), or no encoding."""
    return cfg.position_encoding in ("rotary", "none") or cfg.positions_from_data


def _check(model, positions):
    cfg = model.cfg
    if not supports_cache(cfg):
        raise ValueError(
            f"cached decoding needs rotary positions or positions from the data; this model uses "
            f"implicit {cfg.position_encoding} positions (recompute instead)"
        )
    if cfg.positions_from_data and positions is None:
        raise ValueError("this model takes positions from the data, but none were given")


def _rows(x_BxTxHxK):
    """[B, T, H, K] -> the cache's [A = B x H, T, K] (row b * H + h)."""
    B, T, H, K = x_BxTxHxK.shape
    return x_BxTxHxK.transpose(0, 2, 1, 3).reshape(B * H, T, K)


def _positions(model, B: int, idx_T, positions_BxTxP):
    """Positions of inputs with cache indices idx_T: from the data, or the model's implicit ones
    (``positions.implicit_positions``; numpy when idx_T is, as in ``prefill``)."""
    if positions_BxTxP is not None and model.cfg.positions_from_data:
        return positions_BxTxP
    return implicit_positions(B, model.cfg.max_context, idx_T)


def prefill(model, tokens_BxL, positions_BxLxP=None, *, num_latents: int):
    """Full forward over a window of exactly L = max_context inputs (left-padded with PAD) with
    ``num_latents`` latents; returns (logits of the last position [B, V], a fresh cache)."""
    _check(model, positions_BxLxP)
    cfg = model.cfg
    B, L = tokens_BxL.shape
    if L != cfg.max_context:
        raise ValueError(f"prefill takes windows of exactly max_context={cfg.max_context} inputs, got {L}")
    F, M = num_latents, cfg.num_latents
    if not 1 <= F <= M:
        raise ValueError(f"prefill num_latents must be in [1, num_latents={M}], got {F}")
    idx_L = np.arange(L, dtype=np.int32)
    pos = _positions(model, B, idx_L, positions_BxLxP)
    valid_BxL = tokens_BxL != PAD_ID
    kv_in, table = model.key_inputs(tokens_BxL, pos)  # as the model's forward
    k, v = model.cross.project_kv(kv_in, pos[..., 0], table)
    k_AxLxK, v_AxLxK = _rows(k), _rows(v)
    qpos, q_idx, lat_valid_F = pos[:, L - F :, 0], idx_L[L - F :], valid_BxL[:, L - F :]
    z = model.z_linear(model.embed_inputs(tokens_BxL[:, L - F :], pos[:, L - F :]))
    # The model's blocks, as its forward calls them (eval: no dropout), keeping the keys / values;
    # the cross-attend reads them in the cache's layout.
    cross = model.cross
    visible_BxFxL = make_mask(q_idx, np.broadcast_to(idx_L, (B, L)), valid_BxL)[:, 0]  # the model's rule
    z = cross.finish(z, segment_attention(cross.queries(z, qpos), [(k_AxLxK, v_AxLxK, visible_BxFxL)], layout=ROWS))
    ks, vs = [], []
    lat_kidx = jnp.broadcast_to(q_idx, (B, F))
    for layer in model.layers:
        q, lk, lv = layer.project(z, qpos)
        z = layer.finish(z, layer.attend(q, lk, lv, q_idx, lat_kidx, lat_valid_F))
        pad = ((0, 0), (0, M - F), (0, 0), (0, 0))
        ks.append(_rows(jnp.pad(lk, pad)))
        vs.append(_rows(jnp.pad(lv, pad)))
    logits = model.readout(z[:, -1:])[:, 0]
    A, _, K = k_AxLxK.shape
    cache = Cache(
        cross_k=k_AxLxK,
        cross_v=v_AxLxK,
        cross_idx=jnp.asarray(idx_L),
        cross_valid=valid_BxL,
        new_k=jnp.zeros((A, M, K), k_AxLxK.dtype),
        new_v=jnp.zeros((A, M, v_AxLxK.shape[2]), v_AxLxK.dtype),
        new_valid=jnp.zeros((B, M), bool),
        self_k=tuple(ks),
        self_v=tuple(vs),
        lat_idx=jnp.pad(q_idx, (0, M - F), constant_values=-1),
        lat_valid=jnp.pad(lat_valid_F, ((0, 0), (0, M - F))),
        n=jnp.asarray(F, jnp.int32),
        t=jnp.asarray(L, jnp.int32),
    )
    return logits, cache


def decode_step(model, cache: Cache, token_B, position_BxP=None):
    """Append one input per sequence (and its latent) to the cache; returns (logits [B, V], cache).

    The caller resets (``prefill``) before the latent cache overflows: ``cache.n < num_latents``.
    Each new key / value is written to its cache slot first and attention then reads the slots
    (with the new one visible): one softmax segment per self-attention layer, two for the
    cross-attend (prefilled inputs, decoded inputs), not one more for the new entry (fewer small
    ops per token: ``docs/efficiency.md``). One buffer per layer, each read after its own write
    only, so XLA updates them in place (a stacked [N, ...] buffer was copied at every step).
    """
    _check(model, position_BxP)
    cfg = model.cfg
    L = cfg.max_context
    B = token_B.shape[0]
    t, n = cache.t, cache.n
    q_idx = t[None]
    tok = token_B[:, None]
    pos = _positions(model, B, q_idx, None if position_BxP is None else position_BxP[:, None, :])
    valid_Bx1 = tok != PAD_ID
    x = model.embed_inputs(tok, pos)
    one = _rows  # B x 1 x H x K -> A x 1 x K
    put = lambda buf, new, at: jax.lax.dynamic_update_slice_in_dim(buf, new.astype(buf.dtype), at, axis=1)
    # Cross-attend over the last L inputs: the prefilled ones not older than t - L + 1, and those
    # decoded since, the new one included (slot t - L).
    cross = model.cross
    k1, v1 = cross.project_kv(x, pos[..., 0])
    z = model.z_linear(x)
    qpos = pos[..., 0]
    j = t - L
    new_k, new_v = put(cache.new_k, one(k1), j), put(cache.new_v, one(v1), j)
    new_valid = jax.lax.dynamic_update_slice_in_dim(cache.new_valid, valid_Bx1, j, axis=1)
    old = cache.cross_valid & (cache.cross_idx > t - L)[None, :]
    parts = [(cache.cross_k, cache.cross_v, old[:, None]), (new_k, new_v, new_valid[:, None])]
    z = cross.finish(z, segment_attention(cross.queries(z, qpos), parts, layout=ROWS))
    # Latent self-attention over the latents in the cache, the new one (slot n) included.
    lat_idx = jax.lax.dynamic_update_slice_in_dim(cache.lat_idx, q_idx, n, axis=0)
    lat_valid = jax.lax.dynamic_update_slice_in_dim(cache.lat_valid, valid_Bx1, n, axis=1)
    self_k, self_v = [], []
    for i, layer in enumerate(model.layers):
        q, lk, lv = layer.project(z, qpos)
        self_k.append(put(cache.self_k[i], one(lk), n))
        self_v.append(put(cache.self_v[i], one(lv), n))
        z = layer.finish(z, segment_attention(q, [(self_k[i], self_v[i], lat_valid[:, None])], layout=ROWS))
    logits = model.readout(z)[:, 0]
    cache = cache._replace(
        new_k=new_k,
        new_v=new_v,
        new_valid=new_valid,
        self_k=tuple(self_k),
        self_v=tuple(self_v),
        lat_idx=lat_idx,
        lat_valid=lat_valid,
        n=n + 1,
        t=t + 1,
    )
    return logits, cache
