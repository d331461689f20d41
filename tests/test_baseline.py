"""The Transformer baseline (repro/baseline.py) is a textbook decoder-only Transformer.

An independent, minimal pre-LN causal Transformer forward is written here from
scratch and run on the Perceiver AR's own weights (with M = N); the logits must agree. Block 1
is the cross-attend: its query stream is ``z_linear(x)``, its key / value stream ``x``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.copy import PRESETS
from repro.baseline import as_transformer, is_transformer
from repro.config import ModelConfig
from repro.model import PerceiverAR

CFG = ModelConfig(
    vocab_size=19, max_context=12, num_latents=4, d_model=16, num_layers=2, cross_heads=2, self_heads=4,
    cross_widening=2, self_widening=3, dropout=0.0, position_encoding="learned", final_init_zeros=False,
    learned_position_init=0.5,
)  # fmt: skip


def _w(lin):
    return lambda x: x @ lin.kernel[...] + lin.bias[...]


def _ln(ln, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * ln.scale[...] + ln.bias[...]


def _causal_attention(attn, heads, xq, xkv):
    """softmax(q k^T / sqrt(dk) + causal mask) v, all heads, then the output projection."""
    T = xq.shape[0]
    q, k, v = _w(attn.q)(xq), _w(attn.k)(xkv), _w(attn.v)(xkv)
    dk = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * dk, (h + 1) * dk)
        s = q[:, sl] @ k[:, sl].T / np.sqrt(dk)
        s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -jnp.inf)
        outs.append(jax.nn.softmax(s, axis=-1) @ v[:, sl])
    return _w(attn.o)(jnp.concatenate(outs, -1))


def _mlp(mlp, x):
    return _w(mlp.down)(jnp.square(jax.nn.relu(_w(mlp.up)(x))))


def textbook_transformer(model: PerceiverAR, tokens_T: np.ndarray) -> jax.Array:
    """Logits [T, V] of a decoder-only pre-LN Transformer, L + 1 layers, from the model's weights."""
    T = len(tokens_T)
    pos = jnp.arange(T - 1, -1, -1)  # the model's implicit (terminal-relative) positions
    x = model.embed.embedding[...][tokens_T] + model.pos_tables[0].embedding[...][pos]
    c = model.cross
    h = _w(model.z_linear)(x)
    h = h + _causal_attention(c.attn, CFG.cross_heads, _ln(c.ln_q, h), _ln(c.ln_kv, x))
    h = h + _mlp(c.mlp, _ln(c.ln_mlp, h))
    for blk in model.layers:
        a = _ln(blk.ln_attn, h)
        h = h + _causal_attention(blk.attn, CFG.self_heads, a, a)
        h = h + _mlp(blk.mlp, _ln(blk.ln_mlp, h))
    return _w(model.logits)(_ln(model.ln_final, h))


def test_perceiver_ar_with_m_equal_n_is_a_decoder_only_transformer():
    cfg = dataclasses.replace(CFG, num_latents=CFG.max_context)
    model = PerceiverAR(cfg, rngs=nnx.Rngs(3))
    tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, size=(2, cfg.max_context)).astype(np.int32)
    got = jax.jit(lambda t: model(t))(jnp.asarray(tokens))
    assert got.shape == (2, cfg.max_context, cfg.vocab_size)
    want = jax.jit(jax.vmap(lambda t: textbook_transformer(model, t)))(jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_baseline_is_causal():
    cfg = dataclasses.replace(CFG, num_latents=CFG.max_context)
    model = PerceiverAR(cfg, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(1)
    tokens = rng.integers(3, cfg.vocab_size, size=(1, cfg.max_context)).astype(np.int32)
    fwd = jax.jit(lambda t: model(t))
    base = np.asarray(fwd(jnp.asarray(tokens)))
    for t in (0, 5, cfg.max_context - 1):
        changed = tokens.copy()
        changed[0, t] = 3 + (changed[0, t] - 3 + 1) % (cfg.vocab_size - 3)
        out = np.asarray(fwd(jnp.asarray(changed)))
        # Implicit positions are terminal-relative, so outputs depend only on tokens <= their own.
        np.testing.assert_allclose(out[0, :t], base[0, :t], atol=1e-6, rtol=0)
        assert not np.allclose(out[0, t], base[0, t])


def test_as_transformer_preset():
    exp = PRESETS["cpu"]
    tr = as_transformer(exp)
    assert is_transformer(tr) and not is_transformer(exp)
    assert tr.model.num_latents == tr.model.max_context == exp.model.max_context
    assert dataclasses.replace(tr.model, num_latents=exp.model.num_latents) == exp.model
    assert (tr.optim, tr.train, tr.data) == (exp.optim, exp.train, exp.data)
    assert PRESETS["cpu_transformer"] == tr
