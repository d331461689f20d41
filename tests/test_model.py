"""Tests of the Perceiver AR model: causality, masking, padding, chunked == dense, positions,
dropout, parameter count, zero-init logits and train-time input subsampling.

All models are tiny (L <= 32, d <= 32, 1-2 layers) and every forward is jitted once per model.
Unless a test is about the zero-initialised logits layer, models use ``final_init_zeros=False``:
with a zero logits kernel every logit is exactly 0 and no test of dependence could fail.
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
from repro.model import positions as P
from repro.model.attention import chunked_attention, dense_attention, make_mask

V = 16  # vocabulary: PAD, EOS, SOS + 13 data tokens
L = 21  # window length
M = 7  # latents: window positions L-M .. L-1 = 14 .. 20
LAT_POS = np.arange(L - M, L)  # window position of each latent


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(
        vocab_size=V, max_context=L, num_latents=M, d_model=16, num_layers=1, cross_heads=2, self_heads=2,
        dropout=0.1, cross_dropout=0.2, train_input_positions=12, final_init_zeros=False,
    )  # fmt: skip
    base.update(kw)
    return ModelConfig(**base)


def build(cfg: ModelConfig, seed: int = 0) -> PerceiverAR:
    return PerceiverAR(cfg, rngs=nnx.Rngs(seed))


# XLA's backend optimisations only cost compile time at these sizes.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _uses_loops(cfg: ModelConfig) -> bool:
    return cfg.attention_impl == "chunked" or bool(cfg.cross_head_group or cfg.self_head_group)


class Fwd:
    """A model's forward as a pure function of (state, tokens, positions, rng).

    Models whose attention runs in ``lax.scan`` / ``lax.map`` (chunked, head groups) are jitted:
    eagerly those loops are re-compiled on every call. Dense models run op by op, which reuses
    the per-op compile cache across models of the same shapes and is much cheaper than a jit.
    """

    def __init__(self, model: PerceiverAR, jit: bool | None = None):
        self.graphdef, self.state = nnx.split(model)
        graphdef = self.graphdef

        def apply(state, tokens, positions, rng):
            return nnx.merge(graphdef, state)(tokens, positions, rng=rng)

        def per_seq(state, tokens_NxL, positions, rng):
            # The same key for every sequence (vmap over B=1 forwards): the dropout and key
            # selection masks are then identical for all rows, so rows are comparable in train mode.
            return jax.vmap(lambda t: apply(state, t[None], positions, rng)[0])(tokens_NxL)

        self.raw = apply
        jit = _uses_loops(model.cfg) if jit is None else jit
        self.apply = jax.jit(apply, compiler_options=FAST_COMPILE) if jit else apply
        self._per_seq = jax.jit(per_seq, compiler_options=FAST_COMPILE) if jit else per_seq

    def __call__(self, tokens, positions=None, rng=None, state=None):
        return self.apply(self.state if state is None else state, tokens, positions, rng)

    def per_sequence(self, tokens_NxL, positions=None, rng=None):
        return self._per_seq(self.state, tokens_NxL, positions, rng)


def random_tokens(seed: int, shape) -> jax.Array:
    """Data tokens only (never PAD / EOS / SOS)."""
    return jax.random.randint(jax.random.key(seed), shape, NUM_RESERVED, V, dtype=jnp.int32)


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
    """Positions from the data: 1-D arange(1, n+1), or a 3-D (x, y, channel) raster for tables (5,5,4)."""
    idx = np.arange(n)
    if P_dims == 1:
        pos = (idx + 1)[:, None]
    else:
        pos = np.stack([(idx // 4) % 5, (idx // 20) % 5, idx % 4], axis=-1)
    return jnp.broadcast_to(jnp.asarray(pos, jnp.int32)[None], (B, n, P_dims))


def check_causal(logits_NxMxV, ts, *, tag="", prefix_must_matter=True):
    """Row 0 is the base; row i+1 changed the token at ts[i]. Latent at window position p < t must
    not change; some latent at p >= t must (the latent at p = t itself, if t is a latent).

    ``prefix_must_matter=False`` for train mode, where a prefix input may not be among the keys."""
    logits = np.asarray(logits_NxMxV)
    assert np.isfinite(logits).all(), tag
    for i, t in enumerate(ts):
        diff_M = np.abs(logits[i + 1] - logits[0]).max(-1)
        before = LAT_POS < t
        if before.any():
            assert diff_M[before].max() <= 1e-6, (tag, t, diff_M)
        if prefix_must_matter or t >= L - M:
            assert diff_M[~before].max() > 1e-4, (tag, t, "no later logit changed", diff_M)
        if t >= L - M:
            assert diff_M[t - (L - M)] > 1e-4, (tag, t, "the latent at t ignored its own token", diff_M)


# Perturbed positions: the first input, inside the prefix, the last prefix position, the first
# latent, inside the latent block, the last latent.
TS = (0, 6, L - M - 1, L - M, L - M + 3, L - 1)


# ----------------------------------------------------------------------------- 1. causality


@pytest.mark.parametrize("impl", ["dense", "chunked"])
@pytest.mark.parametrize("from_data", [False, True], ids=["implicit", "data"])
@pytest.mark.parametrize("encoding", ["rotary", "sinusoidal", "learned", "none"])
def test_causality(encoding, from_data, impl):
    kw = dict(position_encoding=encoding, attention_impl=impl, query_chunk=4, key_chunk=8)
    if from_data:
        kw.update(positions_from_data=True, position_table_sizes=(L + 1,) if encoding == "learned" else ())
    model = build(tiny_cfg(**kw))
    tokens = perturb(random_tokens(1, (1, L)), TS)
    pos = data_positions(1, B=tokens.shape[0]) if from_data else None
    check_causal(Fwd(model)(tokens, pos), TS, tag=(encoding, from_data, impl))


@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_causality_3d_positions(impl):
    cfg = tiny_cfg(
        position_encoding="learned", positions_from_data=True, position_table_sizes=(5, 5, 4),
        attention_impl=impl, query_chunk=4, key_chunk=8,
    )  # fmt: skip
    model = build(cfg)
    assert len(model.pos_tables) == 3
    tokens = perturb(random_tokens(2, (1, L)), TS)
    pos = data_positions(3, B=tokens.shape[0])
    fwd = Fwd(model)
    check_causal(fwd(tokens, pos), TS, tag=impl)
    # Each position dimension matters: changing the channel index of one latent changes it.
    pos2 = pos.at[:, L - 1, 2].set((pos[0, L - 1, 2] + 1) % 4)
    assert np.abs(np.asarray(fwd(tokens, pos2) - fwd(tokens, pos))[:, -1]).max() > 1e-4


@pytest.mark.parametrize("impl", ["dense", "chunked"])
@pytest.mark.parametrize("n_pad", [4, L - M], ids=["pad4", "prefix_all_pad"])
def test_causality_train_mode(impl, n_pad):
    """Train mode (dropout, cross-attend dropout, input subsampling) is causal too, for a fixed key:
    in particular a latent whose keys were all dropped must not see later inputs."""
    cfg = tiny_cfg(
        dropout=0.1, cross_dropout=0.5, train_input_positions=12, attention_impl=impl, query_chunk=4,
        key_chunk=5,
    )  # fmt: skip
    fwd = Fwd(build(cfg))
    base = random_tokens(3, (1, L)).at[:, :n_pad].set(PAD_ID)
    ts = tuple(t for t in TS if t >= n_pad)
    tokens = perturb(base, ts)
    for k in range(4):
        out = fwd.per_sequence(tokens, rng=jax.random.key(k))
        check_causal(out, ts, tag=(impl, n_pad, k), prefix_must_matter=False)


# ----------------------------------------------------------------------------- 2. masking


def test_make_mask():
    q_idx = jnp.array([3, 5, 6])
    # Row 0: keys in window order; row 1: gathered keys (out of order), some invalid.
    k_idx = jnp.array([[0, 1, 2, 3, 4, 5, 6], [6, 0, 5, 3, 2, 4, 1]])
    valid = jnp.array([[True, True, False, True, True, True, True], [True, True, True, False, True, True, False]])
    mask = np.asarray(make_mask(q_idx, k_idx, valid))
    assert mask.shape == (2, 1, 3, 7)
    for b in range(2):
        for m in range(3):
            for j in range(7):
                expect = bool(k_idx[b, j] <= q_idx[m]) and bool(valid[b, j])
                assert mask[b, 0, m, j] == expect, (b, m, j)


@pytest.mark.parametrize("chunks", [(2, 3), (4, 5), (8, 16)])
def test_attention_kernels(chunks):
    """dense == chunked == a NumPy softmax over the visible keys; a query with no visible key
    outputs exactly 0 (never a mix of masked, e.g. future, values)."""
    B, Mq, Lk, H, K = 2, 5, 11, 2, 4
    ks = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(ks[0], (B, Mq, H, K))
    k = jax.random.normal(ks[1], (B, Lk, H, K))
    v = jax.random.normal(ks[2], (B, Lk, H, K))
    q_idx = jnp.array([0, 2, 6, 8, 10])
    k_idx = jnp.broadcast_to(jnp.arange(Lk), (B, Lk))
    valid = jnp.ones((B, Lk), bool).at[1, :7].set(False)  # row 1: queries 0..2 see nothing
    mask = np.asarray(make_mask(q_idx, k_idx, valid))[:, 0]  # B x M x L
    s = np.einsum("bmhk,blhk->bhml", np.asarray(q), np.asarray(k)) / np.sqrt(K)
    s = np.where(mask[:, None], s, -np.inf)
    smax = np.max(s, -1, keepdims=True)
    w = np.where(mask[:, None], np.exp(s - np.where(np.isfinite(smax), smax, 0)), 0.0)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
    ref = np.einsum("bhml,blhk->bmhk", w, np.asarray(v))
    dense = dense_attention(q, k, v, q_idx, k_idx, valid)
    chunked = chunked_attention(q, k, v, q_idx, k_idx, valid, query_chunk=chunks[0], key_chunk=chunks[1])
    np.testing.assert_allclose(dense, ref, atol=1e-5)
    np.testing.assert_allclose(chunked, ref, atol=1e-5)
    assert not mask[1, :3].any()
    np.testing.assert_array_equal(np.asarray(dense)[1, :3], 0.0)
    np.testing.assert_array_equal(np.asarray(chunked)[1, :3], 0.0)


@contextlib.contextmanager
def embedding_offset(delta_BxLxDi):
    """Add ``delta`` to the embedded inputs (token + absolute position embedding) of every model."""
    orig = PerceiverAR.embed_inputs
    PerceiverAR.embed_inputs = lambda self, tokens, pos: orig(self, tokens, pos) + delta_BxLxDi
    try:
        yield
    finally:
        PerceiverAR.embed_inputs = orig


def dependency(fwd: Fwd, tokens_BxL, positions=None):
    """[B, M, B', L]: sum of |d logits[b, m, :] / d x[b', l, :]| over the embedded inputs x."""
    B = tokens_BxL.shape[0]
    Di = nnx.merge(fwd.graphdef, fwd.state).cfg.input_width

    def f(delta):
        with embedding_offset(delta):
            return fwd.raw(fwd.state, tokens_BxL, positions, None)

    jac = jax.jit(jax.jacrev(f), compiler_options=FAST_COMPILE)(jnp.zeros((B, L, Di), jnp.float32))  # B x M x V x B x L x Di
    return np.abs(np.asarray(jac)).sum(axis=(2, 5))


@pytest.mark.parametrize(
    "encoding,impl,groups",
    [("rotary", "dense", 0), ("learned", "chunked", 0), ("sinusoidal", "chunked", 1)],
)
def test_gradient_mask(encoding, impl, groups):
    """The latent at window position p depends on exactly {inputs l <= p that are not PAD} plus its
    own input p (the query residual), and on nothing in another sequence of the batch."""
    cfg = tiny_cfg(
        position_encoding=encoding, attention_impl=impl, query_chunk=4, key_chunk=5,
        cross_head_group=groups, self_head_group=groups,
    )  # fmt: skip
    fwd = Fwd(build(cfg))
    tokens = random_tokens(4, (2, L))
    # Row 0: left padding, a PAD inside the prefix and a PAD latent with valid keys before it.
    tokens = tokens.at[0, :4].set(PAD_ID).at[0, 9].set(PAD_ID).at[0, 16].set(PAD_ID)
    # Row 1: latents 14 and 15 sit on left padding with no valid key at all.
    tokens = tokens.at[1, :16].set(PAD_ID)
    dep = dependency(fwd, tokens)
    valid = np.asarray(tokens) != PAD_ID
    for b in range(2):
        for m, p in enumerate(LAT_POS):
            expect = (np.arange(L) <= p) & valid[b]
            expect[p] = True
            got = dep[b, m, b]
            assert (got[~expect] == 0).all(), (b, p, np.nonzero(got[~expect]))
            assert (got[expect] > 1e-6).all(), (b, p, got)
            assert (dep[b, m, 1 - b] == 0).all(), (b, p, "depends on another sequence")


@pytest.mark.parametrize(
    "encoding,impl", [("rotary", "dense"), ("learned", "chunked"), ("sinusoidal", "dense")]
)
def test_left_padding_invariance(encoding, impl):
    """With implicit (terminal-relative) positions the amount of left padding does not matter."""
    cfg = tiny_cfg(position_encoding=encoding, attention_impl=impl, query_chunk=4, key_chunk=5, max_context=32)
    fwd = Fwd(build(cfg))
    for n in (12, 5):  # 5 < M: some latents sit on padding
        seq = random_tokens(5 + n, (1, n))
        outs = [np.asarray(fwd(jnp.pad(seq, ((0, 0), (Lw - n, 0))))) for Lw in (L, 26, 32)]
        for o in outs[1:]:
            np.testing.assert_allclose(o, outs[0], atol=1e-5, err_msg=f"n={n}")
    # ... while the padding tokens themselves are ignored: a different PAD embedding changes nothing
    # for latents on real tokens (they would change if PAD keys were visible).
    model = nnx.merge(fwd.graphdef, fwd.state)
    model.embed.embedding.value = model.embed.embedding.value.at[PAD_ID].add(1.0)
    seq = random_tokens(9, (1, 12))
    tok = jnp.pad(seq, ((0, 0), (L - 12, 0)))
    new = np.asarray(Fwd(model)(tok))
    np.testing.assert_allclose(new, np.asarray(fwd(tok)), atol=1e-5)


# ----------------------------------------------------------------------------- 3. chunked == dense

CHUNK_CFG = tiny_cfg(
    d_model=16, d_input=32, cross_heads=4, self_heads=4, num_layers=2, position_encoding="rotary",
)


@pytest.fixture(scope="module")
def dense_model():
    return build(CHUNK_CFG, seed=3)


@pytest.fixture(scope="module")
def padded_batch():
    tokens = random_tokens(6, (3, L))
    # Row 1 has a short left-padded sequence (two latents on padding), row 2 an interior PAD.
    return tokens.at[1, :16].set(PAD_ID).at[2, 5].set(PAD_ID)


def with_config(model: PerceiverAR, **kw) -> PerceiverAR:
    """The same parameters in a model of another config (attention implementation, chunks, groups)."""
    other = build(dataclasses.replace(model.cfg, **kw), seed=123)
    nnx.update(other, nnx.state(model))
    return other


@pytest.fixture(scope="module")
def dense_logits(dense_model, padded_batch):
    return np.asarray(Fwd(dense_model)(padded_batch))


@pytest.mark.parametrize(
    "kw",
    [
        dict(attention_impl="chunked", query_chunk=1, key_chunk=1),
        dict(attention_impl="chunked", query_chunk=2, key_chunk=3),
        dict(attention_impl="chunked", query_chunk=4, key_chunk=5),
        dict(attention_impl="chunked", query_chunk=7, key_chunk=21),
        dict(attention_impl="chunked", query_chunk=64, key_chunk=64),
        dict(attention_impl="dense", cross_head_group=2, self_head_group=2),
        dict(attention_impl="chunked", query_chunk=4, key_chunk=5, cross_head_group=2, self_head_group=2),
        dict(attention_impl="chunked", query_chunk=3, key_chunk=8, cross_head_group=1, self_head_group=4),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_chunked_equals_dense(dense_model, padded_batch, dense_logits, kw):
    other = with_config(dense_model, **kw)
    # The copy really holds the dense model's parameters.
    np.testing.assert_array_equal(other.logits.kernel.value, dense_model.logits.kernel.value)
    out = np.asarray(Fwd(other)(padded_batch))
    np.testing.assert_allclose(out, dense_logits, atol=1e-5, rtol=1e-5)


def param_grads(model: PerceiverAR, tokens):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    w = jax.random.normal(jax.random.key(7), (tokens.shape[0], M, V))

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def loss_grad(params):
        def loss(params):
            logits = nnx.merge(graphdef, params, rest)(tokens)
            return jnp.sum(jax.nn.log_softmax(logits) * w)

        return jax.grad(loss)(params)

    return jax.tree.leaves(loss_grad(params))


@pytest.mark.parametrize(
    "kw",
    [
        dict(attention_impl="chunked", query_chunk=4, key_chunk=5),
        dict(attention_impl="chunked", query_chunk=2, key_chunk=3, cross_head_group=2, self_head_group=2),
    ],
    ids=["chunked", "chunked_grouped"],
)
def test_chunked_gradients_equal_dense(dense_model, padded_batch, kw):
    g_dense = param_grads(dense_model, padded_batch)
    g_chunk = param_grads(with_config(dense_model, **kw), padded_batch)
    assert len(g_dense) == len(g_chunk)
    assert max(float(np.abs(g).max()) for g in g_dense) > 1e-3  # the loss does depend on the params
    for a, b in zip(g_dense, g_chunk, strict=True):
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(b, a, atol=1e-5 * scale, rtol=1e-4)


# ----------------------------------------------------------------------------- 4. data positions


def test_rotary_data_positions_shift_invariant():
    """Rotary attention sees only position differences: data positions equal to the implicit
    terminal-relative ones plus a constant give the implicit model's logits."""
    cfg = tiny_cfg(position_encoding="rotary", cross_heads=1, self_heads=1)
    implicit = build(cfg)
    from_data = with_config(implicit, positions_from_data=True)
    tokens = random_tokens(10, (2, L)).at[1, :3].set(PAD_ID)
    ref = np.asarray(Fwd(implicit)(tokens))
    fwd = Fwd(from_data)
    term = P.implicit_positions(2, L)
    for shift in (0, 1, 37):
        np.testing.assert_allclose(np.asarray(fwd(tokens, term + shift)), ref, atol=1e-4)
    # Increasing data positions arange(1, L+1) are likewise shift-invariant among themselves ...
    up = data_positions(1, B=2)
    out_up = np.asarray(fwd(tokens, up))
    np.testing.assert_allclose(np.asarray(fwd(tokens, up + 10)), out_up, atol=1e-4)
    # ... but they are the terminal-relative positions *reversed*, so relative offsets change sign
    # and the logits differ: rotary is shift-invariant, not reflection-invariant.
    assert np.abs(out_up - ref).max() > 1e-3


@pytest.mark.parametrize("encoding", ["sinusoidal", "learned"])
def test_absolute_data_positions_equal_implicit(encoding):
    cfg = tiny_cfg(position_encoding=encoding)
    implicit = build(cfg)
    from_data = with_config(implicit, positions_from_data=True, position_table_sizes=(L + 1,))
    tokens = random_tokens(11, (2, L)).at[1, :3].set(PAD_ID)
    ref = np.asarray(Fwd(implicit)(tokens))
    fwd = Fwd(from_data)
    term = jnp.broadcast_to(jnp.arange(L - 1, -1, -1, dtype=jnp.int32)[None, :, None], (2, L, 1))
    np.testing.assert_allclose(np.asarray(fwd(tokens, term)), ref, atol=1e-6)
    # The positions are really used: other positions give other logits.
    assert np.abs(np.asarray(fwd(tokens, data_positions(1, B=2))) - ref).max() > 1e-4
    with pytest.raises(ValueError, match="positions from the data"):
        from_data(tokens)


# ----------------------------------------------------------------------------- 5. dropout


def test_dropout_only_with_rng():
    cfg = tiny_cfg(dropout=0.1, cross_dropout=0.3, train_input_positions=16)
    fwd = Fwd(build(cfg))
    tokens = random_tokens(12, (2, L)).at[1, :4].set(PAD_ID)
    ev1, ev2 = np.asarray(fwd(tokens)), np.asarray(fwd(tokens))
    np.testing.assert_array_equal(ev1, ev2)
    k1, k1b, k2 = (np.asarray(fwd(tokens, rng=jax.random.key(s))) for s in (1, 1, 2))
    np.testing.assert_array_equal(k1, k1b)
    assert np.isfinite(k1).all() and np.isfinite(k2).all()
    assert np.abs(k1 - ev1).max() > 1e-4
    assert np.abs(k2 - ev1).max() > 1e-4
    assert np.abs(k1 - k2).max() > 1e-4


# ----------------------------------------------------------------------------- 6. parameter count


def expected_params(cfg: ModelConfig) -> int:
    """Hand count of the official architecture (all Linear layers have biases, LayerNorms have
    scale and offset)."""
    D, Di, Vv = cfg.d_model, cfg.input_width, cfg.vocab_size
    wc, ws = cfg.cross_widening, cfg.self_widening
    embed = Vv * Di
    pos = 0
    if cfg.position_encoding == "learned":
        pos = sum(cfg.position_table_sizes or (cfg.max_context + 1,)) * Di
    z_linear = Di * D + D
    cross = (
        2 * D + 2 * Di  # LN on queries, LN on inputs
        + (D * Di + Di) + 2 * (Di * Di + Di)  # q (D -> Di), k, v (Di -> Di)
        + (Di * D + D)  # o (Di -> D)
        + 2 * D  # LN before the MLP
        + (D * wc * D + wc * D) + (wc * D * D + D)  # MLP
    )  # fmt: skip
    # Self-attend layer: 2 LNs (4D), q k v o (4D^2 + 4D), MLP (2 w D^2 + w D + D).
    self_layer = (4 + 2 * ws) * D * D + (9 + ws) * D
    if ws == 4:
        assert self_layer == 12 * D * D + 13 * D
    final = 2 * D + D * Vv + Vv
    return embed + pos + z_linear + cross + cfg.num_layers * self_layer + final


@pytest.mark.parametrize(
    "cfg",
    [
        tiny_cfg(),
        tiny_cfg(position_encoding="learned", d_model=16, d_input=32, cross_widening=2, self_widening=3, num_layers=2),
        tiny_cfg(
            position_encoding="learned", positions_from_data=True, position_table_sizes=(5, 5, 4),
            d_model=24, d_input=8, num_layers=2, cross_heads=2, self_heads=4,
        ),
        tiny_cfg(position_encoding="sinusoidal", d_model=32, d_input=16, self_widening=1),
    ],
    ids=["rotary", "learned_din32", "learned_3d_din8", "sinusoidal_din16"],
)
def test_param_count_small(cfg):
    assert count_params(build(cfg)) == expected_params(cfg)


IMAGENET = ModelConfig(
    vocab_size=259, max_context=12416, num_latents=1024, d_model=1024, num_layers=60, cross_heads=16,
    self_heads=16, position_encoding="learned", positions_from_data=True, position_table_sizes=(66, 66, 5),
)  # fmt: skip


def test_param_count_imagenet():
    """The official ``imagenet_w_positions`` model: the paper reports 770M (770.1M)."""
    assert expected_params(IMAGENET) == 770_094_339
    model = nnx.eval_shape(lambda: PerceiverAR(IMAGENET, rngs=nnx.Rngs(0)))
    assert count_params(model) == 770_094_339


# ----------------------------------------------------------------------------- 7. zero-init logits


def test_final_logits_zero_init():
    cfg = tiny_cfg(final_init_zeros=True)
    model = build(cfg)
    np.testing.assert_array_equal(model.logits.kernel.value, 0.0)
    np.testing.assert_array_equal(model.logits.bias.value, 0.0)
    tokens = random_tokens(13, (2, L)).at[1, :5].set(PAD_ID)
    fwd = Fwd(model)
    out = np.asarray(fwd(tokens))
    assert out.shape == (2, M, V) and out.dtype == np.float32
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(np.asarray(fwd(tokens, rng=jax.random.key(0))), 0.0)
    # The switch works: the same seed without zero init gives non-zero logits.
    assert np.abs(np.asarray(Fwd(build(dataclasses.replace(cfg, final_init_zeros=False)))(tokens))).max() > 1e-3


# ----------------------------------------------------------------------------- 8. train_input_positions


@pytest.fixture(scope="module")
def no_dropout_model():
    return build(tiny_cfg(dropout=0.0, cross_dropout=0.0, train_input_positions=0), seed=5)


@pytest.mark.parametrize("K", [M, 10, L - 1])
def test_train_input_positions_subsample(no_dropout_model, K):
    model = with_config(no_dropout_model, train_input_positions=K, cross_dropout=0.3, dropout=0.1)
    tokens = random_tokens(14, (2, L)).at[1, :6].set(PAD_ID)
    fwd = Fwd(model)
    out = np.asarray(fwd(tokens, rng=jax.random.key(K)))
    assert out.shape == (2, M, V) and np.isfinite(out).all()
    # Without dropout, subsampling alone (K < L) still changes the output: fewer keys are seen.
    plain = with_config(no_dropout_model, train_input_positions=K)
    fwd_plain = Fwd(plain)
    sub = np.asarray(fwd_plain(tokens, rng=jax.random.key(K)))
    assert np.isfinite(sub).all()
    assert np.abs(sub - np.asarray(fwd_plain(tokens))).max() > 1e-4


@pytest.mark.parametrize("K", [L, L + 5])
def test_train_input_positions_noop_when_all_kept(no_dropout_model, K):
    """K >= L keeps every input: with no dropout the rng path is exactly the eval path."""
    fwd = Fwd(with_config(no_dropout_model, train_input_positions=K))
    tokens = random_tokens(15, (2, L)).at[1, :6].set(PAD_ID)
    np.testing.assert_array_equal(np.asarray(fwd(tokens, rng=jax.random.key(1))), np.asarray(fwd(tokens)))
