"""Tests of the Perceiver AR model: causality, masking, padding, chunked == dense, positions,
dropout, parameter count, zero-init logits and train-time input subsampling.

All models are tiny (L <= 32, d <= 32, 1-2 layers). Compiles dominate the run time, so each
model's forward is jitted once (XLA optimisation level 0) and reused across checks. Unless a
test is about the zero-initialised logits layer, models use ``final_init_zeros=False``: with a
zero logits kernel every logit is exactly 0 and no test of dependence could fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from repro.config import ModelConfig
from repro.data.tokens import NUM_RESERVED, PAD_ID
from repro.model import PerceiverAR, count_params
from repro.model.attention import chunked_attention, dense_attention, fused_attention, make_mask, segment_attention

try:  # private JAX API, used only to speed up abstract model construction (fast_tracing)
    from jax._src.interpreters.partial_eval import DynamicJaxprTracer
except ImportError:  # pragma: no cover
    DynamicJaxprTracer = None

V = 16  # vocabulary: PAD, EOS, SOS + 13 data tokens
L = 21  # window length
M = 7  # latents: window positions L-M .. L-1 = 14 .. 20
LAT_POS = np.arange(L - M, L)  # window position of each latent

# XLA's backend optimisations only cost compile time at these sizes. YNNPACK fusions are off:
# jaxlib 0.10.2's XLA:CPU miscompiles some of them (jit(jacrev(model)) over >= ~100 cotangents
# gives wrong, even cross-batch, gradients), and these tests are about the model, not XLA.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_experimental_ynn_fusion_type": ""}
fast_jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(
        vocab_size=V, max_context=L, num_latents=M, d_model=16, num_layers=1, cross_heads=2, self_heads=2,
        dropout=0.1, cross_dropout=0.3, train_input_positions=12, final_init_zeros=False,
    )  # fmt: skip
    base.update(kw)
    return ModelConfig(**base)


def build(cfg: ModelConfig, seed: int = 0) -> PerceiverAR:
    # An "rbg" key: the initialisers' random ops compile (per new shape) about twice as fast as
    # with the default threefry, and these tests need random parameters, not particular ones.
    return PerceiverAR(cfg, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))


@contextlib.contextmanager
def fast_tracing():
    """Speed only: while tracing, every nnx.Rngs draw builds (and discards) an error message that
    walks the whole trace so far (JAX's Tracer.sharding -> _origin_msg), which makes
    ``nnx.eval_shape`` of a deep model quadratic (60 layers: ~15 s instead of ~1 s). Skip it."""
    if DynamicJaxprTracer is None or not hasattr(DynamicJaxprTracer, "_origin_msg"):
        yield
        return
    orig = DynamicJaxprTracer._origin_msg
    DynamicJaxprTracer._origin_msg = lambda self: ""
    try:
        yield
    finally:
        DynamicJaxprTracer._origin_msg = orig


def abstract_model(cfg: ModelConfig) -> PerceiverAR:
    with fast_tracing():
        return nnx.eval_shape(lambda: PerceiverAR(cfg, rngs=nnx.Rngs(0)))


def with_config(model: PerceiverAR, **kw) -> PerceiverAR:
    """The same parameters in a model built for another config (attention implementation, chunks,
    positions from data, ...): the structure comes from a real (abstract) construction."""
    graphdef, abstract_state = nnx.split(abstract_model(dataclasses.replace(model.cfg, **kw)))
    state = nnx.state(model)
    assert jax.tree.structure(state) == jax.tree.structure(abstract_state)
    return nnx.merge(graphdef, state)


class Fwd:
    """A model's forward as one jitted pure function of (state, tokens, positions, rng)."""

    def __init__(self, model: PerceiverAR):
        self.graphdef, self.state = nnx.split(model)
        self.cfg = model.cfg
        graphdef = self.graphdef

        def raw(state, tokens, positions, rng):
            return nnx.merge(graphdef, state)(tokens, positions, rng=rng)

        def per_seq(state, tokens_NxL, positions, rng):
            # The same key for every sequence (a vmap over B=1 forwards), so dropout and key
            # selection masks are identical for all rows: rows are then comparable in train mode.
            return jax.vmap(lambda t: raw(state, t[None], positions, rng)[0])(tokens_NxL)

        self.raw = raw
        self._fwd = fast_jit(raw)
        self._per_seq = fast_jit(per_seq)

    def __call__(self, tokens, positions=None, rng=None, state=None):
        return np.asarray(self._fwd(self.state if state is None else state, tokens, positions, rng))

    def per_sequence(self, tokens_NxL, positions=None, rng=None):
        return np.asarray(self._per_seq(self.state, tokens_NxL, positions, rng))


def random_tokens(seed: int, shape) -> jax.Array:
    """Data tokens only (never PAD / EOS / SOS). NumPy: a jax.random op compiles per shape."""
    return jnp.asarray(np.random.default_rng(seed).integers(NUM_RESERVED, V, shape), jnp.int32)


def perturb(tokens_1xL, ts) -> jax.Array:
    """[1 + len(ts), L]: row 0 the original, row i+1 with a different data token at ts[i]."""
    rows = [tokens_1xL[0]]
    for i, t in enumerate(ts):
        old = int(tokens_1xL[0, t])
        new = NUM_RESERVED + (old - NUM_RESERVED + 1 + i) % (V - NUM_RESERVED)
        assert new != old and new != PAD_ID
        rows.append(tokens_1xL[0].at[t].set(new))
    return jnp.stack(rows)


def data_positions(P_dims: int, B: int = 1, n: int = L) -> jax.Array:
    """Positions from the data: 1-D arange(1, n+1), or an (x, y, channel) raster for tables (5, 5, 4)."""
    idx = np.arange(n)
    pos = (idx + 1)[:, None] if P_dims == 1 else np.stack([(idx // 4) % 5, (idx // 20) % 5, idx % 4], -1)
    return jnp.broadcast_to(jnp.asarray(pos, jnp.int32)[None], (B, n, P_dims))


def terminal_positions(B: int, n: int = L, shift: int = 0) -> jax.Array:
    """The implicit positions written out: L-1, ..., 1, 0 (plus ``shift``)."""
    pos = jnp.arange(n - 1 + shift, shift - 1, -1, dtype=jnp.int32)
    return jnp.broadcast_to(pos[None, :, None], (B, n, 1))


def check_causal(logits_NxMxV, ts, *, tag="", prefix_must_matter=True):
    """Row 0 is the base; row i+1 changed the token at ts[i]. A latent at window position p < t
    must not change; some latent at p >= t must (the latent at p = t itself, if t is a latent).

    ``prefix_must_matter=False`` in train mode, where a prefix input may not be among the keys."""
    logits = np.asarray(logits_NxMxV)
    assert np.isfinite(logits).all(), tag
    for i, t in enumerate(ts):
        diff_M = np.abs(logits[i + 1] - logits[0]).max(-1)
        before = LAT_POS < t
        if before.any():
            assert diff_M[before].max() <= 1e-6, (tag, t, "an earlier latent saw a later input", diff_M)
        if prefix_must_matter or t >= L - M:
            assert diff_M[~before].max() > 1e-4, (tag, t, "no later logit changed", diff_M)
        if t >= L - M:
            assert diff_M[t - (L - M)] > 1e-4, (tag, t, "the latent at t ignored its own token", diff_M)


# Perturbed positions: the first input, inside the prefix, the last prefix position, the first
# latent, inside the latent block, the last latent.
TS = (0, 6, L - M - 1, L - M, L - M + 3, L - 1)


# ----------------------------------------------------------------------------- 1. causality


NB = len(TS) + 1  # batch of the causality checks; tests that reuse their models use it too


@functools.cache
def base_model(encoding: str) -> PerceiverAR:
    return build(tiny_cfg(position_encoding=encoding))


@functools.cache
def causal_fwd(encoding: str, from_data: bool, impl: str) -> Fwd:
    """One model (and compiled forward) per case, shared with the position and dropout tests
    (same batch shape [NB, L]: no recompiles). Chunks 4 / 8 divide neither M = 7 nor L = 21."""
    kw = dict(attention_impl=impl, query_chunk=4, key_chunk=8)
    if from_data:
        kw.update(positions_from_data=True, position_table_sizes=(L + 1,) if encoding == "learned" else ())
    model = with_config(base_model(encoding), **kw)
    assert model.cfg.attention_impl == impl and model.cfg.positions_from_data == from_data
    return Fwd(model)


@pytest.mark.parametrize("impl", ["dense", "chunked"])
@pytest.mark.parametrize("from_data", [False, True], ids=["implicit", "data"])
@pytest.mark.parametrize("encoding", ["rotary", "sinusoidal", "learned", "none"])
def test_causality(encoding, from_data, impl):
    """Eval mode (rng=None) of a model configured with dropout, cross-attend dropout and input
    subsampling."""
    tokens = perturb(random_tokens(1, (1, L)), TS)
    pos = data_positions(1, B=NB) if from_data else None
    check_causal(causal_fwd(encoding, from_data, impl)(tokens, pos), TS, tag=(encoding, from_data, impl))


@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_causality_3d_positions(impl):
    cfg = tiny_cfg(
        position_encoding="learned", positions_from_data=True, position_table_sizes=(5, 5, 4),
        attention_impl=impl, query_chunk=4, key_chunk=8,
    )  # fmt: skip
    model = build(cfg)
    assert [t.num_embeddings for t in model.pos_tables] == [5, 5, 4]
    tokens = perturb(random_tokens(2, (1, L)), TS)
    pos = data_positions(3, B=tokens.shape[0])
    fwd = Fwd(model)
    out = fwd(tokens, pos)
    check_causal(out, TS, tag=impl)
    # Every position dimension is used: a new channel index for the last input changes its latent.
    pos2 = pos.at[:, L - 1, 2].set((pos[0, L - 1, 2] + 1) % 4)
    assert np.abs(fwd(tokens, pos2) - out)[:, -1].max() > 1e-4


@pytest.mark.parametrize("impl", ["dense", "chunked", "fused"])
def test_causality_train_mode(impl):
    """Train mode (dropout, cross-attend dropout, input subsampling) is causal too, for a fixed key.
    With the whole prefix padded, a latent whose keys were all dropped must still not see later
    inputs (its attention output is 0, not an average over masked, later, keys)."""
    cfg = tiny_cfg(
        dropout=0.1, cross_dropout=0.5, train_input_positions=12, attention_impl=impl, query_chunk=4,
        key_chunk=5,
    )  # fmt: skip
    fwd = Fwd(build(cfg))
    # As many perturbations for both paddings: one compile.
    for n_pad, ts in [(4, (6, L - M - 1, L - M, L - M + 3, L - 1)), (L - M, (14, 15, 17, 19, 20))]:
        tokens = perturb(random_tokens(3, (1, L)).at[:, :n_pad].set(PAD_ID), ts)
        for k in range(3):
            out = fwd.per_sequence(tokens, rng=jax.random.key(k))
            check_causal(out, ts, tag=(impl, n_pad, k), prefix_must_matter=False)


# ----------------------------------------------------------------------------- 2. masking


def test_make_mask():
    q_idx = jnp.array([3, 5, 6])
    # Row 0: keys in window order; row 1: gathered keys (out of order), some invalid.
    k_idx = jnp.array([[0, 1, 2, 3, 4, 5, 6], [6, 0, 5, 3, 2, 4, 1]])
    valid = jnp.array([[1, 1, 0, 1, 1, 1, 1], [1, 1, 1, 0, 1, 1, 0]], bool)
    mask = np.asarray(make_mask(q_idx, k_idx, valid))
    assert mask.shape == (2, 1, 3, 7)
    kk, qq, vv = np.asarray(k_idx), np.asarray(q_idx), np.asarray(valid)
    expect = (kk[:, None, :] <= qq[None, :, None]) & vv[:, None, :]
    np.testing.assert_array_equal(mask[:, 0], expect)
    assert mask[1, 0, 0].tolist() == [False, True, False, False, True, False, False]


def test_attention_kernels():
    """dense == chunked == a NumPy softmax over the visible keys, for chunks that do and do not
    divide; a query with no visible key outputs exactly 0 (never a mix of masked, e.g. later, values)."""
    B, Mq, Lk, H, K = 2, 5, 11, 2, 4
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, n, H, K)), jnp.float32) for n in (Mq, Lk, Lk))
    q_idx = jnp.array([0, 2, 6, 8, 10])
    k_idx = jnp.broadcast_to(jnp.arange(Lk), (B, Lk))
    # Row 0: key 4 is invalid; row 1: keys 0..6 are, so queries 0..2 see nothing.
    valid = jnp.ones((B, Lk), bool).at[1, :7].set(False).at[0, 4].set(False)
    mask = np.asarray(make_mask(q_idx, k_idx, valid))[:, 0]  # B x M x L
    s = np.einsum("bmhk,blhk->bhml", np.asarray(q), np.asarray(k)) / np.sqrt(K)
    s = np.where(mask[:, None], s, -np.inf)
    smax = np.max(s, -1, keepdims=True)
    w = np.where(mask[:, None], np.exp(s - np.where(np.isfinite(smax), smax, 0)), 0.0)
    ref = np.einsum("bhml,blhk->bmhk", w / np.maximum(w.sum(-1, keepdims=True), 1e-30), np.asarray(v))
    assert not mask[1, :3].any() and (ref[1, :3] == 0).all()
    dense = fast_jit(dense_attention)(q, k, v, q_idx, k_idx, valid)
    np.testing.assert_allclose(dense, ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(dense)[1, :3], 0.0)
    # The KV cache's form of the same rule (segment_attention): keys split into segments, in the
    # cache's row layout (A = B x H rows), one softmax over all segments.
    rows = lambda x: x.transpose(0, 2, 1, 3).reshape(B * H, Lk, K)
    vis = jnp.asarray(mask)
    segs = [(rows(k)[:, a:b], rows(v)[:, a:b], vis[..., a:b]) for a, b in [(0, 3), (3, 4), (4, Lk)]]
    cached = fast_jit(functools.partial(segment_attention, layout="AxTxK"))(q, segs)
    np.testing.assert_allclose(cached, ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(cached)[1, :3], 0.0)
    for qc, kc in [(2, 3), (8, 16)]:  # padded chunks; chunks larger than M and L
        chunked = fast_jit(functools.partial(chunked_attention, query_chunk=qc, key_chunk=kc))
        out = chunked(q, k, v, q_idx, k_idx, valid)
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=str((qc, kc)))
        np.testing.assert_array_equal(np.asarray(out)[1, :3], 0.0)
    # jax.nn.dot_product_attention (XLA here; cuDNN on a GPU, benchmarks/device_check.sh) with the
    # same mask: its rows without a visible key (which XLA averages over masked keys) are 0 too.
    fused = fast_jit(fused_attention)(q, k, v, q_idx, k_idx, valid)
    np.testing.assert_allclose(fused, ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(fused)[1, :3], 0.0)
    raw = jax.nn.dot_product_attention(q, k, v, mask=make_mask(q_idx, k_idx, valid), implementation="xla")
    assert np.abs(np.asarray(raw)[1, :3]).max() > 1e-3  # the rows the wrapper must (and does) zero


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU (benchmarks/device_check.sh)")
def test_fused_cudnn_equals_dense_on_gpu():
    """On a GPU, bfloat16: cuDNN flash attention under the Perceiver AR masks (last M of L keys,
    left padding, a row with no visible key) == the dense path, outputs and gradients."""
    B, Mq, Lk, H, K = 2, 128, 512, 4, 64
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, n, H, K)), jnp.bfloat16) for n in (Mq, Lk, Lk))
    q_idx = jnp.arange(Lk - Mq, Lk)
    k_idx = jnp.broadcast_to(jnp.arange(Lk), (B, Lk))
    valid = jnp.ones((B, Lk), bool).at[1, : Lk - Mq + 3].set(False)  # row 1: 3 latents see nothing
    cudnn = functools.partial(fused_attention, implementation="cudnn")
    ref = jax.jit(dense_attention)(q, k, v, q_idx, k_idx, valid).astype(jnp.float32)
    out = jax.jit(cudnn)(q, k, v, q_idx, k_idx, valid).astype(jnp.float32)
    np.testing.assert_allclose(out, ref, atol=2e-2, rtol=2e-2)
    np.testing.assert_array_equal(np.asarray(out)[1, :3], 0.0)

    def loss(f):
        return lambda q, k, v: jnp.sum(f(q, k, v, q_idx, k_idx, valid).astype(jnp.float32) ** 2)

    g_ref = jax.jit(jax.grad(loss(dense_attention), argnums=(0, 1, 2)))(q, k, v)
    g_out = jax.jit(jax.grad(loss(cudnn), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_ref, g_out, strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(b, a, atol=5e-2 * max(1.0, float(np.abs(a).max())), rtol=5e-2)


@contextlib.contextmanager
def embedding_offset(delta_BxLxDi):
    """Add ``delta`` to the embedded inputs (token + absolute position embedding) of every model
    (eval mode: the model embeds the last n <= L inputs, for the queries, and all L, for the keys;
    models with ``cross_kv_per_vocab="off"``, else the keys come from a per-vocabulary table)."""
    orig = PerceiverAR.embed_inputs
    n_all = delta_BxLxDi.shape[1]
    PerceiverAR.embed_inputs = lambda self, tok, pos: orig(self, tok, pos) + delta_BxLxDi[:, n_all - tok.shape[1] :]
    try:
        yield
    finally:
        PerceiverAR.embed_inputs = orig


def dependency(fwd: Fwd, tokens_BxL) -> np.ndarray:
    """[B, M, B', L]: sum over logits and channels of |d logits[b, m, :] / d x[b', l, :]|, x the
    embedded inputs."""
    B = tokens_BxL.shape[0]

    def f(delta):
        with embedding_offset(delta):
            return fwd.raw(fwd.state, tokens_BxL, None, None)

    # Forward mode: compiles faster than jacrev through the chunked path's scan + checkpoint.
    jac = fast_jit(jax.jacfwd(f))(jnp.zeros((B, L, fwd.cfg.input_width), jnp.float32))  # B,M,V,B',L,Di
    return np.abs(np.asarray(jac)).sum(axis=(2, 5))


@pytest.mark.parametrize("encoding,impl", [("rotary", "dense"), ("learned", "chunked")])
def test_gradient_mask(encoding, impl):
    """The latent at window position p depends on exactly {inputs l <= p that are not PAD} plus its
    own input p (the query residual, even when p is PAD), and on nothing in other sequences."""
    # Keys from the embedded inputs (not the per-vocabulary table), so d / d x reaches them; the
    # table path computes the same function (test_kv_per_vocab_equals_per_input).
    cfg = tiny_cfg(
        position_encoding=encoding, attention_impl=impl, query_chunk=4, key_chunk=5, cross_kv_per_vocab="off"
    )
    tokens = random_tokens(4, (2, L))
    # Row 0: left padding, a PAD inside the prefix, a PAD latent with valid keys before it.
    tokens = tokens.at[0, :4].set(PAD_ID).at[0, 9].set(PAD_ID).at[0, 16].set(PAD_ID)
    # Row 1: latents 14 and 15 sit on left padding with no valid key at all.
    tokens = tokens.at[1, :16].set(PAD_ID)
    dep = dependency(Fwd(build(cfg)), tokens)
    valid = np.asarray(tokens) != PAD_ID
    for b in range(2):
        assert (dep[b, :, 1 - b] == 0).all(), (b, "a latent depends on another sequence")
        for m, p in enumerate(LAT_POS):
            expect = (np.arange(L) <= p) & valid[b]
            expect[p] = True
            got = dep[b, m, b]
            assert (got[~expect] == 0).all(), (b, p, "depends on", np.nonzero(got * ~expect))
            assert (got[expect] > 1e-6).all(), (b, p, "ignores", np.nonzero(expect & (got <= 1e-6)))


@pytest.mark.parametrize("encoding,impl", [("rotary", "dense"), ("sinusoidal", "chunked")])
def test_left_padding_invariance(encoding, impl):
    """With implicit (terminal-relative) positions the amount of left padding does not matter,
    also for latents sitting on the padding; and PAD keys are ignored, whatever PAD embeds to."""
    kw = dict(attention_impl=impl, query_chunk=4, key_chunk=5, max_context=32)
    cfg = tiny_cfg(position_encoding=encoding, **kw)
    fwd = Fwd(build(cfg))
    seqs = [random_tokens(5, (1, 12)), random_tokens(6, (1, 5))]  # 5 < M: latents on padding
    short = jnp.concatenate([jnp.pad(s, ((0, 0), (L - s.shape[1], 0))) for s in seqs])
    long = jnp.concatenate([jnp.pad(s, ((0, 0), (32 - s.shape[1], 0))) for s in seqs])
    out = fwd(short)
    np.testing.assert_allclose(fwd(long), out, atol=1e-5)
    # A different PAD embedding changes nothing for latents on real tokens (PAD keys are masked).
    is_token_table = lambda path: jax.tree_util.keystr(path).startswith("['embed']['embedding']")
    state = jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[PAD_ID].add(1.0) if is_token_table(path) else x, fwd.state
    )
    assert sum(is_token_table(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)) == 1
    new = fwd(short, state=state)
    np.testing.assert_allclose(new[0], out[0], atol=1e-5)
    assert np.abs(new[1, :2] - out[1, :2]).max() > 1e-4  # the latents on PAD themselves do change
    np.testing.assert_allclose(new[1, 2:], out[1, 2:], atol=1e-5)


# ----------------------------------------------------------------------------- 3. chunked == dense

CHUNK_CFG = tiny_cfg(d_model=16, d_input=32, cross_heads=4, self_heads=4, position_encoding="rotary")


@pytest.fixture(scope="module")
def dense_model():
    return build(CHUNK_CFG, seed=3)


@pytest.fixture(scope="module")
def padded_batch():
    tokens = random_tokens(6, (3, L))
    # Row 1: a short left-padded sequence (two latents on padding); row 2: an interior PAD.
    return tokens.at[1, :16].set(PAD_ID).at[2, 5].set(PAD_ID)


@pytest.fixture(scope="module")
def dense_logits(dense_model, padded_batch):
    return Fwd(dense_model)(padded_batch)


@pytest.mark.parametrize(
    "kw",
    [
        dict(attention_impl="chunked", query_chunk=1, key_chunk=1),
        dict(attention_impl="chunked", query_chunk=64, key_chunk=64),
        dict(attention_impl="dense", cross_head_group=2, self_head_group=2),
        dict(attention_impl="fused"),
        dict(attention_impl="fused", cross_head_group=2, self_head_group=1),
        dict(attention_impl="chunked", query_chunk=4, key_chunk=5, cross_head_group=2, self_head_group=2),
        dict(attention_impl="chunked", query_chunk=3, key_chunk=8, cross_head_group=1, self_head_group=4),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_chunked_equals_dense(dense_model, padded_batch, dense_logits, kw):
    other = with_config(dense_model, **kw)
    np.testing.assert_array_equal(other.logits.kernel[...], dense_model.logits.kernel[...])  # really copied
    np.testing.assert_allclose(Fwd(other)(padded_batch), dense_logits, atol=1e-5, rtol=1e-5)


def param_grads(model: PerceiverAR, tokens) -> list[np.ndarray]:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    w = jnp.asarray(np.random.default_rng(7).normal(size=(tokens.shape[0], M, V)), jnp.float32)

    def loss(params):
        logits = nnx.merge(graphdef, params, rest)(tokens)
        return jnp.sum(jax.nn.log_softmax(logits) * w)

    return [np.asarray(g) for g in jax.tree.leaves(fast_jit(jax.grad(loss))(params))]


@pytest.mark.parametrize(
    "kw",
    [dict(attention_impl="chunked", query_chunk=2, key_chunk=3), dict(attention_impl="fused")],
    ids=["chunked", "fused"],
)
def test_chunked_gradients_equal_dense(dense_model, padded_batch, kw):
    """Gradients of a loss w.r.t. every parameter: dense vs chunked (padded chunks) and fused."""
    dense_grads = param_grads(dense_model, padded_batch)
    g_chunk = param_grads(with_config(dense_model, **kw), padded_batch)
    assert len(dense_grads) == len(g_chunk)
    assert min(float(np.abs(g).max()) for g in dense_grads) > 1e-6  # every parameter gets a gradient
    for a, b in zip(dense_grads, g_chunk, strict=True):
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(b, a, atol=1e-5 * scale, rtol=1e-4)


def test_kv_per_vocab_equals_per_input(dense_model, padded_batch, dense_logits):
    """cross_kv_per_vocab: LN + k / v projections per vocabulary entry, gathered by token, is the
    per-input computation reassociated: the same logits (eval and train mode with dropout, cross
    dropout and input subsampling) and the same gradients for every parameter."""
    B, n = padded_batch.shape
    assert dense_model.cfg.kv_per_vocab(B * n)  # the fixture's model takes the table path ...
    off = with_config(dense_model, cross_kv_per_vocab="off")
    assert not off.cfg.kv_per_vocab(B * n)  # ... and this one does not
    np.testing.assert_allclose(Fwd(off)(padded_batch), dense_logits, atol=1e-5, rtol=1e-5)
    train_kw = dict(dropout=0.1, cross_dropout=0.3, train_input_positions=12)
    on_t, off_t = with_config(dense_model, **train_kw), with_config(off, **train_kw)
    rng = jax.random.key(3)
    a, b = Fwd(on_t)(padded_batch, rng=rng), Fwd(off_t)(padded_batch, rng=rng)
    assert np.abs(a - dense_logits).max() > 1e-4  # train mode really differs from eval
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    for g_on, g_off in zip(param_grads(dense_model, padded_batch), param_grads(off, padded_batch), strict=True):
        scale = max(1.0, float(np.abs(g_off).max()))
        np.testing.assert_allclose(g_on, g_off, atol=1e-5 * scale, rtol=1e-4)


def test_kv_per_vocab_only_when_eligible_and_cheaper():
    """Only when an input's features are its token embedding alone, and the table is smaller."""
    rows = 2 * V
    for encoding, expect in [("rotary", True), ("none", True), ("sinusoidal", False), ("learned", False)]:
        assert tiny_cfg(position_encoding=encoding).kv_per_vocab(rows) is expect, encoding
    assert not tiny_cfg().kv_per_vocab(rows - 1)  # fewer key rows than 2 x vocabulary
    assert not tiny_cfg(cross_kv_per_vocab="off").kv_per_vocab(10 * rows)


def test_kv_per_vocab_computes_less(dense_model, padded_batch):
    """XLA's FLOP count of the forward: the table path does less work (it is really taken)."""

    def flops(model):
        graphdef, state = nnx.split(model)
        fwd = jax.jit(lambda st, t: nnx.merge(graphdef, st)(t))
        return fwd.lower(state, padded_batch).compile().cost_analysis()["flops"]

    assert flops(dense_model) < flops(with_config(dense_model, cross_kv_per_vocab="off"))


# ----------------------------------------------------------------------------- 4. data positions


def test_rotary_data_positions_shift_invariant():
    """Rotary attention sees only position differences: data positions equal to the implicit
    terminal-relative ones plus any constant give the implicit model's logits.

    Note: increasing data positions arange(1, L+1) are the implicit (decreasing) ones *reversed*,
    so with rotary they flip the sign of every offset and do not give the implicit logits."""
    tokens = random_tokens(10, (NB, L)).at[1, :3].set(PAD_ID)
    ref = causal_fwd("rotary", False, "dense")(tokens)
    fwd = causal_fwd("rotary", True, "dense")
    for shift in (0, 1, 37):
        np.testing.assert_allclose(fwd(tokens, terminal_positions(NB, shift=shift)), ref, atol=1e-4)
    up = data_positions(1, B=NB)
    out_up = fwd(tokens, up)
    np.testing.assert_allclose(fwd(tokens, up + 10), out_up, atol=1e-4)  # shift-invariant as well
    assert np.abs(out_up - ref).max() > 1e-3  # ... but not reflection-invariant


@pytest.mark.parametrize("encoding", ["sinusoidal", "learned"])
def test_absolute_data_positions_equal_implicit(encoding):
    """Data positions equal to the implicit terminal-relative ones (L-1 .. 0) give the same logits."""
    tokens = random_tokens(11, (NB, L)).at[1, :3].set(PAD_ID)
    ref = causal_fwd(encoding, False, "dense")(tokens)
    fwd = causal_fwd(encoding, True, "dense")
    np.testing.assert_allclose(fwd(tokens, terminal_positions(NB)), ref, atol=1e-6)
    assert np.abs(fwd(tokens, data_positions(1, B=NB)) - ref).max() > 1e-4  # positions are used
    with pytest.raises(ValueError, match="positions from the data"):
        nnx.merge(fwd.graphdef, fwd.state)(tokens)


# ----------------------------------------------------------------------------- 5. dropout


def test_dropout_only_with_rng():
    fwd = causal_fwd("rotary", False, "dense")
    assert (fwd.cfg.dropout, fwd.cfg.cross_dropout, fwd.cfg.train_input_positions) == (0.1, 0.3, 12)
    tokens = random_tokens(12, (NB, L)).at[1, :4].set(PAD_ID)
    ev1, ev2 = fwd(tokens), fwd(tokens)
    np.testing.assert_array_equal(ev1, ev2)
    k1, k1b, k2 = (fwd(tokens, rng=jax.random.key(s)) for s in (1, 1, 2))
    np.testing.assert_array_equal(k1, k1b)
    assert np.isfinite(k1).all() and np.isfinite(k2).all()
    assert np.abs(k1 - ev1).max() > 1e-4
    assert np.abs(k2 - ev1).max() > 1e-4
    assert np.abs(k1 - k2).max() > 1e-4


# ----------------------------------------------------------------------------- 6. parameter count


def expected_params(cfg: ModelConfig) -> int:
    """Hand count of the official architecture: all Linear layers have biases, LayerNorms a scale
    and an offset, learned position tables are one table per position dimension."""
    D, Di, Vv = cfg.d_model, cfg.input_width, cfg.vocab_size
    wc, ws = cfg.cross_widening, cfg.self_widening
    embed = Vv * Di
    pos = 0
    if cfg.position_encoding == "learned":
        pos = sum(cfg.position_table_sizes or (cfg.max_context + 1,)) * Di
    z_linear = Di * D + D
    cross = (
        2 * D + 2 * Di  # LN on the latents (queries), LN on the inputs (keys / values)
        + (D * Di + Di) + 2 * (Di * Di + Di)  # q: D -> Di; k, v: Di -> Di
        + (Di * D + D)  # o: Di -> D
        + 2 * D  # LN before the MLP
        + (D * wc * D + wc * D) + (wc * D * D + D)  # MLP D -> wc D -> D
    )  # fmt: skip
    # A self-attend layer: 2 LNs (4D) + q, k, v, o (4D^2 + 4D) + MLP (2 w D^2 + w D + D).
    self_layer = (4 + 2 * ws) * D * D + (9 + ws) * D
    if ws == 4:
        assert self_layer == 12 * D * D + 13 * D
    final = 2 * D + (D * Vv + Vv)  # final LN, logits
    return embed + pos + z_linear + cross + cfg.num_layers * self_layer + final


LEARNED_3D = dict(position_encoding="learned", positions_from_data=True, position_table_sizes=(5, 5, 4))


@pytest.mark.parametrize(
    "cfg",
    [
        tiny_cfg(),
        tiny_cfg(position_encoding="learned", d_input=32, cross_widening=2, self_widening=3, num_layers=2),
        tiny_cfg(**LEARNED_3D, d_model=24, d_input=8, num_layers=2, self_heads=4),
        tiny_cfg(position_encoding="sinusoidal", d_model=32, d_input=16, self_widening=1),
    ],
    ids=["rotary", "learned_din32", "learned_3d_din8", "sinusoidal_din16"],
)
def test_param_count_small(cfg):
    assert count_params(abstract_model(cfg)) == expected_params(cfg)


IMAGENET = ModelConfig(
    vocab_size=259, max_context=12416, num_latents=1024, d_model=1024, num_layers=60, cross_heads=16,
    self_heads=16, position_encoding="learned", positions_from_data=True, position_table_sizes=(66, 66, 5),
)  # fmt: skip


def test_param_count_imagenet():
    """The official ``imagenet_w_positions`` model: the paper reports 770M (770.1M)."""
    assert expected_params(IMAGENET) == 770_094_339
    assert count_params(abstract_model(IMAGENET)) == 770_094_339


# ----------------------------------------------------------------------------- 7. zero-init logits


def test_final_logits_zero_init():
    model = build(tiny_cfg(final_init_zeros=True))
    np.testing.assert_array_equal(model.logits.kernel[...], 0.0)
    np.testing.assert_array_equal(model.logits.bias[...], 0.0)
    tokens = random_tokens(13, (2, L)).at[1, :5].set(PAD_ID)
    out = Fwd(model)(tokens)
    assert out.shape == (2, M, V) and out.dtype == np.float32
    np.testing.assert_array_equal(out, 0.0)
    # The switch works: without zero init the logits kernel is random.
    assert np.abs(build(tiny_cfg(final_init_zeros=False)).logits.kernel[...]).min() > 0


# ----------------------------------------------------------------------------- 8. train_input_positions


@pytest.fixture(scope="module")
def no_dropout_model():
    return build(tiny_cfg(dropout=0.0, cross_dropout=0.0, train_input_positions=0), seed=5)


@pytest.fixture(scope="module")
def train_tokens():
    return random_tokens(14, (2, L)).at[1, :6].set(PAD_ID)


@pytest.fixture(scope="module")
def eval_logits(no_dropout_model, train_tokens):
    return Fwd(no_dropout_model)(train_tokens)  # eval ignores train_input_positions: the reference


@pytest.mark.parametrize("K", [M, 10])
def test_train_input_positions_subsample(no_dropout_model, train_tokens, eval_logits, K):
    """K < L: the M latents plus K - M random earlier inputs are the keys (K = M: the latents
    only). The logits stay finite, and subsampling alone (no dropout) changes them. (With dropout
    on top: test_dropout_only_with_rng.)"""
    sub = Fwd(with_config(no_dropout_model, train_input_positions=K))(train_tokens, rng=jax.random.key(K))
    assert sub.shape == (2, M, V) and np.isfinite(sub).all()
    assert np.abs(sub - eval_logits).max() > 1e-4


def test_train_input_positions_noop_when_all_kept(no_dropout_model, train_tokens, eval_logits):
    """K >= L keeps every input: with no dropout the rng path is exactly the eval path."""
    out = Fwd(with_config(no_dropout_model, train_input_positions=L))(train_tokens, rng=jax.random.key(1))
    np.testing.assert_array_equal(out, eval_logits)
