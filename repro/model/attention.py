"""Masked multi-head attention: a dense path and a memory-efficient chunked path.

Both paths compute exactly the same function. The mask is never passed in as a dense [M, L]
array: it is derived from index vectors, so the chunked path can build it chunk by chunk.

    query m may attend key l  <=>  k_idx[b, l] <= q_idx[m]  and  key_valid[b, l]

``q_idx`` / ``k_idx`` are positions in the input window (0 .. L-1), which makes this one rule
serve the causal cross-attend (latent at window position p sees inputs <= p), the causal
latent self-attention, padding, cross-attend dropout and KV-cached decoding.

Masked scores are replaced by a large finite negative number (not -inf), so masked weights are
exactly 0 after the exponential (the row max is taken over visible keys). A query whose keys are
all masked (a latent sitting on left padding, or one whose keys were all removed by cross-attend
dropout) therefore gets an output of exactly 0 in both paths: never NaN, and never a uniform
average over masked keys, which would include *later* inputs and leak the future into that
latent (whose prediction of the next token can carry loss).

The fused path is ``jax.nn.dot_product_attention`` with the same boolean mask: on a GPU with
bfloat16 / float16 inputs its cuDNN flash-attention kernel (the mask becomes a bias; the latents'
"last M queries of L keys" causal rule is bottom-right aligned, which the kernel's own causal mode,
top-left aligned, does not express, and left padding is not a sequence length either), elsewhere
XLA's reference implementation. Its rows with no visible key are set to 0 afterwards, as above.

The chunked path follows Rabe & Staats (2021) as the official code's ``_chunked_attend`` does:
query chunks, key chunks, an online softmax, and ``jax.checkpoint`` on each key chunk so the
backward pass does not keep the [M, L] probabilities. JAX's own ``jax.nn.dot_product_attention``
has no CPU flash kernel and takes only a dense mask, so this ~40-line kernel is hand-written.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from repro.config import backend_kind

MASK_VALUE = -1e30


def make_mask(q_idx_M: jax.Array, k_idx_BxL: jax.Array, key_valid_BxL: jax.Array) -> jax.Array:
    """Boolean mask [B, 1, M, L] (the 1 broadcasts over heads)."""
    causal_BxMxL = k_idx_BxL[:, None, :] <= q_idx_M[None, :, None]
    return (causal_BxMxL & key_valid_BxL[:, None, :])[:, None]


MODEL_LAYOUT = "BxTxHxK"  # keys / values as the model computes them
ROWS_LAYOUT = "AxTxK"  # the KV cache's rows: A = B x H (repro/model/cache.py)


def segment_attention(q_BxFxHxK, segments, *, layout: str = MODEL_LAYOUT):
    """The one softmax / masking rule of the dense path and of the KV cache: F queries per
    (sequence, head) over one or more segments ``(k, v, visible_BxFxT)`` of keys, as one softmax.

    ``layout`` is the keys' and values' layout: ``"BxTxHxK"`` (the model's), or ``"AxTxK"`` (the
    cache's rows, A = B x H, row b * H + h: ``repro/model/cache.py`` keeps its L-long buffers so
    that a decoding step never transposes them). The rule: the scale is folded into q ([F, K],
    not [F, T]); masked scores are MASK_VALUE, so exp() of them is exactly 0, except in a row with
    no visible key (max = MASK_VALUE), whose max is taken as 0: all its weights, its sum and its
    output are then 0. The max is a constant of the softmax (stop_gradient). The softmax is
    normalised after the value matmul (as the chunked path does): one pass over the [F, T] weights
    fewer, forward and backward. Returns [B, F, H, K] in v's dtype."""
    B, F, H, K = q_BxFxHxK.shape
    q_BxFxHxK = q_BxFxHxK * jnp.asarray(K**-0.5, q_BxFxHxK.dtype)
    f32 = jnp.float32
    if layout == ROWS_LAYOUT:
        q_AxFxK = q_BxFxHxK.transpose(0, 2, 1, 3).reshape(B * H, F, K)
        score = lambda k: jnp.einsum("afk,atk->aft", q_AxFxK, k, preferred_element_type=f32).reshape(B, H, F, -1)
        weigh = lambda e, v: jnp.einsum("aft,atk->afk", e.reshape(B * H, F, -1).astype(v.dtype), v,
                                        preferred_element_type=f32)  # fmt: skip
    elif layout == MODEL_LAYOUT:
        score = lambda k: jnp.einsum("bmhk,blhk->bhml", q_BxFxHxK, k, preferred_element_type=f32)
        weigh = lambda e, v: jnp.einsum("bhml,blhk->bmhk", e.astype(v.dtype), v, preferred_element_type=f32)
    else:
        raise ValueError(f"unknown key layout '{layout}'")
    s_BxHxFxT = [jnp.where(vis_BxFxT[:, None], score(k), MASK_VALUE) for k, _, vis_BxFxT in segments]
    m_BxHxF = s_BxHxFxT[0].max(-1)
    for s in s_BxHxFxT[1:]:
        m_BxHxF = jnp.maximum(m_BxHxF, s.max(-1))
    m_BxHxF = jax.lax.stop_gradient(m_BxHxF)
    m_BxHxF = jnp.where(m_BxHxF > MASK_VALUE / 2, m_BxHxF, 0.0)
    out = denom_BxHxF = None
    for s, (_, v, _) in zip(s_BxHxFxT, segments, strict=True):
        e_BxHxFxT = jnp.exp(s - m_BxHxF[..., None])
        o, d = weigh(e_BxHxFxT, v), e_BxHxFxT.sum(-1)
        out, denom_BxHxF = (o, d) if out is None else (out + o, denom_BxHxF + d)
    dtype = segments[0][1].dtype
    if layout == ROWS_LAYOUT:
        denom_AxF = denom_BxHxF.reshape(B * H, F)
        out_AxFxK = (out / jnp.where(denom_AxF > 0, denom_AxF, 1.0)[..., None]).astype(dtype)
        return out_AxFxK.reshape(B, H, F, K).transpose(0, 2, 1, 3)
    denom_BxFxH = denom_BxHxF.transpose(0, 2, 1)
    return (out / jnp.where(denom_BxFxH > 0, denom_BxFxH, 1.0)[..., None]).astype(dtype)


def dense_attention(q_BxMxHxK, k_BxLxHxK, v_BxLxHxK, q_idx_M, k_idx_BxL, key_valid_BxL):
    """All M queries over all L keys under ``make_mask``'s rule (``segment_attention``, one segment)."""
    visible_BxMxL = make_mask(q_idx_M, k_idx_BxL, key_valid_BxL)[:, 0]
    return segment_attention(q_BxMxHxK, [(k_BxLxHxK, v_BxLxHxK, visible_BxMxL)])


_FUSED_FALLBACK_WARNED = False
# (implementation, dtype) of every fused attention traced in this process: what really ran
# (benchmarks/device_step.py reports it; cuDNN needs bfloat16 / float16 inputs).
FUSED_TRACED: set[tuple[str, str]] = set()


def fused_attention(q_BxMxHxK, k_BxLxHxK, v_BxLxHxK, q_idx_M, k_idx_BxL, key_valid_BxL, *, implementation=None):
    """``jax.nn.dot_product_attention`` under the dense path's mask: cuDNN (flash attention) on
    a GPU for bfloat16 / float16 inputs, XLA otherwise or when cuDNN refuses the shapes (a
    warning says so). ``implementation`` forces one ("xla" / "cudnn")."""
    global _FUSED_FALLBACK_WARNED
    mask_Bx1xMxL = make_mask(q_idx_M, k_idx_BxL, key_valid_BxL)
    forced = implementation is not None
    if implementation is None:
        half = q_BxMxHxK.dtype in (jnp.bfloat16, jnp.float16)
        implementation = "cudnn" if half and backend_kind() == "gpu" else "xla"
    try:
        out = jax.nn.dot_product_attention(
            q_BxMxHxK, k_BxLxHxK, v_BxLxHxK, mask=mask_Bx1xMxL, implementation=implementation
        )
    except (NotImplementedError, RuntimeError, ValueError) as e:
        if forced or implementation == "xla":
            raise
        if not _FUSED_FALLBACK_WARNED:
            import warnings

            warnings.warn(f"cuDNN attention unavailable ({e}); using XLA's dot_product_attention", stacklevel=2)
            _FUSED_FALLBACK_WARNED = True
        implementation = "xla"
        out = jax.nn.dot_product_attention(q_BxMxHxK, k_BxLxHxK, v_BxLxHxK, mask=mask_Bx1xMxL, implementation="xla")
    FUSED_TRACED.add((implementation, str(q_BxMxHxK.dtype)))
    # A row with no visible key: XLA averages over the masked keys (later inputs too); we give 0.
    visible_BxMx1x1 = mask_Bx1xMxL[:, 0].any(-1)[:, :, None, None]
    return jnp.where(visible_BxMx1x1, out, 0).astype(v_BxLxHxK.dtype)


def _pad_to(x, axis: int, multiple: int, value=0):
    n = x.shape[axis]
    extra = (-n) % multiple
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def chunked_attention(
    q_BxMxHxK, k_BxLxHxK, v_BxLxHxK, q_idx_M, k_idx_BxL, key_valid_BxL, *, query_chunk: int, key_chunk: int
):
    B, M, H, K = q_BxMxHxK.shape
    L = k_BxLxHxK.shape[1]
    qc, kc = min(query_chunk, M), min(key_chunk, L)
    scale = K**-0.5
    # Pad to whole chunks; padded keys are invalid (weight 0), padded queries are cut off at the end.
    q = _pad_to(q_BxMxHxK, 1, qc)
    q_idx = _pad_to(q_idx_M, 0, qc)
    k = _pad_to(k_BxLxHxK, 1, kc)
    v = _pad_to(v_BxLxHxK, 1, kc)
    k_idx = _pad_to(k_idx_BxL, 1, kc)
    valid = _pad_to(key_valid_BxL, 1, kc, value=False)
    nq, nk = q.shape[1] // qc, k.shape[1] // kc
    # Key chunks first on the scanned axis: [nk, B, kc, ...].
    k_chunks = k.reshape(B, nk, kc, H, K).swapaxes(0, 1)
    v_chunks = v.reshape(B, nk, kc, H, K).swapaxes(0, 1)
    kidx_chunks = k_idx.reshape(B, nk, kc).swapaxes(0, 1)
    valid_chunks = valid.reshape(B, nk, kc).swapaxes(0, 1)

    def one_query_chunk(args):
        q_BxCxHxK, qi_C = args

        @jax.checkpoint
        def key_step(carry, xs):
            acc_BxHxCxK, m_BxHxC, l_BxHxC = carry
            k_c, v_c, ki_c, val_c = xs
            mask = make_mask(qi_C, ki_c, val_c)
            s = jnp.einsum("bchk,bjhk->bhcj", q_BxCxHxK, k_c, preferred_element_type=jnp.float32) * scale
            s = jnp.where(mask, s, MASK_VALUE)
            m_new = jnp.maximum(m_BxHxC, s.max(-1))
            p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
            corr = jnp.exp(m_BxHxC - m_new)
            l_new = l_BxHxC * corr + p.sum(-1)
            acc = acc_BxHxCxK * corr[..., None] + jnp.einsum(
                "bhcj,bjhk->bhck", p.astype(v_c.dtype), v_c, preferred_element_type=jnp.float32
            )
            return (acc, m_new, l_new), None

        C = q_BxCxHxK.shape[1]
        init = (
            jnp.zeros((B, H, C, K), jnp.float32),
            jnp.full((B, H, C), -jnp.inf, jnp.float32),
            jnp.zeros((B, H, C), jnp.float32),
        )
        (acc, _, l), _ = jax.lax.scan(key_step, init, (k_chunks, v_chunks, kidx_chunks, valid_chunks))
        # l == 0 only for a row with no visible key, whose acc is 0 too: output 0, no NaN.
        return (acc / jnp.where(l > 0, l, 1.0)[..., None]).transpose(0, 2, 1, 3)  # B x C x H x K

    q_chunks = q.reshape(B, nq, qc, H, K).swapaxes(0, 1)
    qi_chunks = q_idx.reshape(nq, qc)
    out_nqxBxCxHxK = jax.lax.map(one_query_chunk, (q_chunks, qi_chunks))
    out = out_nqxBxCxHxK.swapaxes(0, 1).reshape(B, nq * qc, H, K)[:, :M]
    return out.astype(v_BxLxHxK.dtype)


def attend(
    q_BxMxHxK,
    k_BxLxHxK,
    v_BxLxHxK,
    q_idx_M,
    k_idx_BxL,
    key_valid_BxL,
    *,
    impl: str = "dense",  # dense | chunked | fused (ModelConfig.resolved_attention resolves "auto")
    query_chunk: int = 1024,
    key_chunk: int = 4096,
    head_group: int = 0,
):
    """Attention over all heads; ``head_group`` > 0 computes that many heads at a time (memory)."""

    def run(q, k, v):
        if impl == "chunked":
            return chunked_attention(
                q, k, v, q_idx_M, k_idx_BxL, key_valid_BxL, query_chunk=query_chunk, key_chunk=key_chunk
            )
        if impl == "fused":
            return fused_attention(q, k, v, q_idx_M, k_idx_BxL, key_valid_BxL)
        if impl != "dense":
            raise ValueError(f"unknown attention implementation '{impl}'")
        return dense_attention(q, k, v, q_idx_M, k_idx_BxL, key_valid_BxL)

    H = q_BxMxHxK.shape[2]
    if not head_group or head_group >= H:
        return run(q_BxMxHxK, k_BxLxHxK, v_BxLxHxK)
    G = H // head_group

    def split(x):  # B x T x H x K -> G x B x T x (H/G) x K
        B, T, _, K = x.shape
        return x.reshape(B, T, G, head_group, K).transpose(2, 0, 1, 3, 4)

    out_GxBxMxhxK = jax.lax.map(lambda a: run(*a), (split(q_BxMxHxK), split(k_BxLxHxK), split(v_BxLxHxK)))
    B, M, _, K = q_BxMxHxK.shape
    return out_GxBxMxhxK.transpose(1, 2, 0, 3, 4).reshape(B, M, H, K)
