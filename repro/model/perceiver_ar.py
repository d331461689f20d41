"""Perceiver AR (Hawthorne et al., 2022) as the official code builds it.

    tokens_BxL --embed(+absolute positions)--> x_BxLxDi
    queries: the last M rows of x_BxLxDi --z_linear--> z_BxMxD
    cross-attend  z = z + Drop(Attn(LN(z), LN(x), causal))        (query residual)
                  z = z + Drop(MLP(LN(z)))
    L_self times  z = z + Drop(Attn(LN(z), LN(z), causal))
                  z = z + Drop(MLP(LN(z)))
    logits_BxMxV = Linear_zero_init(LN(z))

The latent at window position p attends to inputs at positions <= p that are not PAD, and
predicts the token at p + 1. All MLPs use squared ReLU. See ``repro/model/__init__.py`` for
the shape letters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from repro.config import ModelConfig
from repro.data.tokens import PAD_ID
from repro.model import positions
from repro.model.attention import attend

# Haiku's LayerNorm default in the official Perceiver code.
LN_EPS = 1e-5


def _dropout(x, rate: float, rng: jax.Array | None):
    # Inline rather than nnx.Dropout: the model takes one explicit key per call (fold_in(step))
    # so that a train step is a pure function of (params, batch, step) and resume is exact.
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class _Keys:
    """Hands out fresh sub-keys from one key (or None when deterministic)."""

    def __init__(self, rng: jax.Array | None):
        self.rng, self.n = rng, 0

    def __call__(self) -> jax.Array | None:
        if self.rng is None:
            return None
        self.n += 1
        return jax.random.fold_in(self.rng, self.n)


class _GivenKeys(_Keys):
    """Pre-drawn keys handed out in order: a rematerialised block gets the very keys it would
    have drawn itself, so remat on / off computes the same function (same dropout masks)."""

    def __init__(self, *keys):
        self.given, self.n = keys, 0

    def __call__(self) -> jax.Array | None:
        self.n += 1
        return self.given[self.n - 1]


# Dropout keys each block draws (two: after attention and after the MLP).
_KEYS_PER_BLOCK = 2


@jax.custom_jvp
def _matmul(x_NxD, w_DxO):
    return x_NxD @ w_DxO


@_matmul.defjvp
def _matmul_jvp(primals, tangents):
    # The tangent in w multiplies by x through an explicit transposed copy of x (an optimisation
    # barrier keeps XLA from folding it away): its transpose, the weight gradient of the backward
    # pass, is then [D, N] x [N, O], the matmul form XLA:CPU runs with YNNPACK; folded, it is a
    # contraction over both operands' first axis, which XLA:CPU runs with Eigen, slower
    # (docs/efficiency.md). Same values; forward mode (jvp) works as for any function.
    x_NxD, w_DxO = primals
    dx, dw = tangents
    x_again = jax.lax.optimization_barrier(x_NxD.T).T
    return x_NxD @ w_DxO, dx @ w_DxO + x_again @ dw


def dense(x_BxTxD, kernel_DxO, bias_O):
    """``x @ kernel + bias`` over the last axis (``nnx.Linear``'s function and dtype promotion),
    with the weight gradient computed in the matmul form XLA:CPU runs fastest."""
    dtype = jnp.result_type(x_BxTxD, kernel_DxO, bias_O)
    lead = x_BxTxD.shape[:-1]
    y = _matmul(x_BxTxD.reshape(-1, x_BxTxD.shape[-1]).astype(dtype), kernel_DxO.astype(dtype))
    return y.reshape(*lead, kernel_DxO.shape[-1]) + bias_O.astype(dtype)


class Linear(nnx.Linear):
    """``nnx.Linear`` (same parameters) computed by :func:`dense`."""

    def __call__(self, x):
        return dense(x, self.kernel[...], self.bias[...])


def sq_relu(x):
    return jnp.square(jax.nn.relu(x))


class MLP(nnx.Module):
    def __init__(self, d: int, widening: int, *, rngs: nnx.Rngs):
        self.up = Linear(d, d * widening, rngs=rngs)
        self.down = Linear(d * widening, d, rngs=rngs)

    def __call__(self, x_BxTxD):
        return self.down(sq_relu(self.up(x_BxTxD)))


class Attention(nnx.Module):
    """Multi-head attention; q/k/v/o have biases as the official ``conv_1d`` (hk.Linear)."""

    def __init__(self, d_q: int, d_kv: int, width: int, d_out: int, heads: int, cfg: ModelConfig, *, rngs):
        self.heads, self.head_dim = heads, width // heads
        self.q = Linear(d_q, width, rngs=rngs)
        self.k = Linear(d_kv, width, rngs=rngs)
        self.v = Linear(d_kv, width, rngs=rngs)
        self.o = Linear(width, d_out, rngs=rngs)
        self.rotary = cfg.position_encoding == "rotary"
        self.fraction, self.wavelength = cfg.rotary_fraction, cfg.max_wavelength or cfg.max_context

    def _split(self, x_BxTxW):
        B, T, _ = x_BxTxW.shape
        return x_BxTxW.reshape(B, T, self.heads, self.head_dim)

    def project_q(self, xq_BxMxD, qpos_BxM):
        q = self._split(self.q(xq_BxMxD))
        return positions.apply_rotary(q, qpos_BxM, self.fraction, self.wavelength) if self.rotary else q

    def project_kv(self, xkv_BxLxD, kpos_BxL):
        k, v = self._merged(xkv_BxLxD, self.k, self.v)
        if self.rotary:
            k = positions.apply_rotary(k, kpos_BxL, self.fraction, self.wavelength)
        return k, v

    def project_qkv(self, x_BxTxD, pos_BxT):
        """Self-attention: ``project_q`` and ``project_kv`` of the same inputs, in one matmul."""
        q, k, v = self._merged(x_BxTxD, self.q, self.k, self.v)
        if self.rotary:
            q = positions.apply_rotary(q, pos_BxT, self.fraction, self.wavelength)
            k = positions.apply_rotary(k, pos_BxT, self.fraction, self.wavelength)
        return q, k, v

    def _merged(self, x_BxTxD, *linears):
        """Several projections of the same inputs as one matmul (one [D, n W] dot instead of n
        [D, W] ones: fewer, larger ops), each output [B, T, H, K]. The kernels are stacked per
        head ([D, H, n, K]), so a heads-sharded kernel (``repro/parallel.py``) stays sharded the
        same way and the merged matmul needs no communication. Dtypes promote as ``nnx.Linear``."""
        D, H, K = x_BxTxD.shape[-1], self.heads, self.head_dim
        kernels = [lin.kernel[...].reshape(D, H, K) for lin in linears]
        biases = [lin.bias[...].reshape(H, K) for lin in linears]
        n = len(linears)
        kernel = jnp.stack(kernels, axis=2).reshape(D, H * n * K)
        y = dense(x_BxTxD, kernel, jnp.stack(biases, axis=1).reshape(-1))
        y_BxTxHxNxK = y.reshape(*x_BxTxD.shape[:-1], H, n, K)
        return [y_BxTxHxNxK[:, :, :, i] for i in range(n)]

    def project_kv_per_vocab(self, table_VxD, tokens_BxL, kpos_BxL):
        """``project_kv`` of inputs whose features are a function of their token alone: project
        the V table rows once, then gather by token (V rows of matmul instead of B x L)."""
        k_table, v_table = self._merged(table_VxD[None], self.k, self.v)  # [1, V, H, K] each

        def gather(t_1xVxHxK):
            # Gathered head-major ([H, B, L, K]) and returned as a [B, L, H, K] view: the
            # attention products want heads outside, and XLA cancels the view's transpose against
            # theirs, so the B x L keys / values are not transposed again (one core: 4 % of the
            # N=1024 step; docs/efficiency.md).
            t_HxVxK = t_1xVxHxK[0].transpose(1, 0, 2)
            return jnp.take(t_HxVxK, tokens_BxL, axis=1).transpose(1, 2, 0, 3)

        k, v = gather(k_table), gather(v_table)
        if self.rotary:
            k = positions.apply_rotary(k, kpos_BxL, self.fraction, self.wavelength)
        return k, v

    def output(self, heads_BxMxHxK):
        """The output projection of the heads' outputs (concatenated): [B, M, d_out]."""
        B, M = heads_BxMxHxK.shape[:2]
        return self.o(heads_BxMxHxK.reshape(B, M, -1))


class _Block(nnx.Module):
    """What both blocks share, after their projections: attention with the configured kernel
    (``attend``) and the rest of the block (``finish``). Each block's ``__call__`` is written in
    these pieces and its projections (``queries`` / ``project_kv``, ``project``), and the cached
    decoding (``repro/model/cache.py``) calls the very same pieces, replacing only ``attend`` (by
    its softmax over cache segments): one implementation of each block. Subclasses set
    ``attn`` (Attention), ``ln_mlp``, ``mlp`` and ``cfg``."""

    def _head_group(self) -> int:
        raise NotImplementedError

    def attend(self, q_BxMxHxK, k_BxTxHxK, v_BxTxHxK, q_idx_M, k_idx_BxT, valid_BxT):
        """Masked attention (``attention.attend``, the config's kernel): the heads' outputs
        [B, M, H, K], before the output projection."""
        c = self.cfg
        return attend(
            q_BxMxHxK, k_BxTxHxK, v_BxTxHxK, q_idx_M, k_idx_BxT, valid_BxT,
            impl=c.resolved_attention(), query_chunk=c.query_chunk, key_chunk=c.key_chunk,
            head_group=self._head_group(),
        )  # fmt: skip

    def finish(self, z_BxMxD, heads_BxMxHxK, keys: _Keys | None = None):
        """The block after its attention: output projection, dropout, residual onto the latents
        (the cross-attend's query residual); then the MLP residual, dropout. ``keys`` None (the
        cache: evaluation) or handing out None: no dropout."""
        keys = _Keys(None) if keys is None else keys
        rate = self.cfg.dropout
        z = z_BxMxD + _dropout(self.attn.output(heads_BxMxHxK), rate, keys())
        return z + _dropout(self.mlp(self.ln_mlp(z)), rate, keys())


class CrossAttendBlock(_Block):
    def __init__(self, cfg: ModelConfig, *, rngs):
        D, Di = cfg.d_model, cfg.input_width
        self.ln_q = nnx.LayerNorm(D, epsilon=LN_EPS, rngs=rngs)
        self.ln_kv = nnx.LayerNorm(Di, epsilon=LN_EPS, rngs=rngs)
        # qk/v width = input width (official cross_attention_shape_for_attn='kv'), output back to D.
        self.attn = Attention(D, Di, Di, D, cfg.cross_heads, cfg, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(D, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(D, cfg.cross_widening, rngs=rngs)
        self.cfg = cfg

    def _head_group(self) -> int:
        return self.cfg.cross_head_group

    def queries(self, z_BxMxD, qpos_BxM):
        """Queries [B, M, H, K] of the latents: pre-LN, q projection, rotary."""
        return self.attn.project_q(self.ln_q(z_BxMxD), qpos_BxM)

    def project_kv(self, kv_in, kpos_BxL, table_VxDi=None):
        """Keys / values [B, L, H, K] (what the cache stores) from what ``PerceiverAR.key_inputs``
        gives: embedded inputs (table None), or tokens and the embedding table (computed per
        vocabulary entry, gathered by token). Pre-LN, k / v projections, rotary on the keys."""
        if table_VxDi is None:
            return self.attn.project_kv(self.ln_kv(kv_in), kpos_BxL)
        return self.attn.project_kv_per_vocab(self.ln_kv(table_VxDi), kv_in, kpos_BxL)

    def __call__(self, z_BxMxD, kv_in, qpos_BxM, kpos_BxL, q_idx_M, k_idx_BxL, valid_BxL, table_VxDi, keys: _Keys):
        """``kv_in``: the embedded inputs x_BxLxDi, or, with ``table_VxDi`` (the token embedding
        table) given, the input tokens_BxL, whose keys / values are then computed per vocabulary
        entry (``ModelConfig.cross_kv_per_vocab``)."""
        k, v = self.project_kv(kv_in, kpos_BxL, table_VxDi)
        q = self.queries(z_BxMxD, qpos_BxM)
        return self.finish(z_BxMxD, self.attend(q, k, v, q_idx_M, k_idx_BxL, valid_BxL), keys)


class SelfAttendBlock(_Block):
    def __init__(self, cfg: ModelConfig, *, rngs):
        D = cfg.d_model
        self.ln_attn = nnx.LayerNorm(D, epsilon=LN_EPS, rngs=rngs)
        self.attn = Attention(D, D, D, D, cfg.self_heads, cfg, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(D, epsilon=LN_EPS, rngs=rngs)
        self.mlp = MLP(D, cfg.self_widening, rngs=rngs)
        self.cfg = cfg

    def _head_group(self) -> int:
        return self.cfg.self_head_group

    def project(self, z_BxMxD, pos_BxM):
        """Queries, keys and values [B, M, H, K] of the latents (the keys / values are what the
        cache stores): one pre-LN, q / k / v projections, rotary on queries and keys."""
        return self.attn.project_qkv(self.ln_attn(z_BxMxD), pos_BxM)

    def __call__(self, z_BxMxD, pos_BxM, idx_M, valid_BxM, keys: _Keys):
        q, k, v = self.project(z_BxMxD, pos_BxM)
        heads = self.attend(q, k, v, idx_M, jnp.broadcast_to(idx_M, valid_BxM.shape), valid_BxM)
        return self.finish(z_BxMxD, heads, keys)


class PerceiverAR(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        Di, D = cfg.input_width, cfg.d_model
        # Haiku's hk.Embed default (official code): truncated normal, stddev 1, so token
        # embeddings are as large as the sinusoidal position features added to them.
        self.embed = nnx.Embed(cfg.vocab_size, Di, embedding_init=nnx.initializers.truncated_normal(1.0), rngs=rngs)
        if cfg.position_encoding == "learned":
            sizes = cfg.position_table_sizes or (cfg.max_context + 1,)
            # Official 'random' tables: hk.Embed's default init, truncated normal (+-2 sd), stddev 1.
            init = nnx.initializers.truncated_normal(cfg.learned_position_init)
            self.pos_tables = nnx.List([nnx.Embed(n, Di, embedding_init=init, rngs=rngs) for n in sizes])
        self.z_linear = Linear(Di, D, rngs=rngs)
        self.cross = CrossAttendBlock(cfg, rngs=rngs)
        self.layers = nnx.List([SelfAttendBlock(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.ln_final = nnx.LayerNorm(D, epsilon=LN_EPS, rngs=rngs)
        kernel_init = nnx.initializers.zeros if cfg.final_init_zeros else nnx.initializers.lecun_normal()
        self.logits = Linear(D, cfg.vocab_size, kernel_init=kernel_init, rngs=rngs)

    # -------------------------------------------------------------------------------- pieces
    def embed_inputs(self, tokens_BxL, pos_BxLxP):
        """Token embedding plus, for absolute encodings, one position table per dimension."""
        cfg = self.cfg
        x = self.embed(tokens_BxL)
        if cfg.position_encoding == "learned":
            for p, table in enumerate(self.pos_tables):
                x = x + table(pos_BxLxP[..., p])
        elif cfg.position_encoding == "sinusoidal":
            wl = cfg.max_wavelength or positions.SINUSOIDAL_MAX_WAVELENGTH  # official max_scale
            for p in range(pos_BxLxP.shape[-1]):
                x = x + positions.sinusoidal_features(pos_BxLxP[..., p], cfg.input_width, wl).astype(x.dtype)
        return x

    def key_inputs(self, tokens_BxL, pos_BxLxP):
        """What the cross-attend projects its keys / values from (``CrossAttendBlock.project_kv``):
        (tokens, the embedding table) when they are computed per vocabulary entry
        (``ModelConfig.cross_kv_per_vocab``), else (the embedded inputs, None)."""
        if self.cfg.kv_per_vocab(tokens_BxL.size):
            return tokens_BxL, self.embed.embedding[...]
        return self.embed_inputs(tokens_BxL, pos_BxLxP), None

    def _restrict_inputs(self, x, pos, idx, valid, M: int, rng):
        """Train-time context restriction (both off when ``rng`` is None, i.e. at eval)."""
        cfg = self.cfg
        B, L = valid.shape
        if rng is None:
            return x, pos, idx, valid
        if cfg.cross_dropout > 0:
            # Official encoder_dropout_prob: Bernoulli keep-mask per (example, input position).
            keep = jax.random.bernoulli(jax.random.fold_in(rng, 1), 1.0 - cfg.cross_dropout, (B, L))
            valid = valid & keep
        K = cfg.train_input_positions
        if 0 < K < L:
            # Keep the M latent positions and K - M random earlier inputs (padding sorted last),
            # gathered so the cross-attend really runs on K keys (official train_input_positions).
            n_prefix, n_keep = L - M, max(K - M, 0)
            score = jax.random.uniform(jax.random.fold_in(rng, 2), (B, n_prefix))
            score = jnp.where(valid[:, :n_prefix], score, 2.0)
            chosen = jnp.sort(jnp.argsort(score, axis=1)[:, :n_keep], axis=1)
            sel_BxK = jnp.concatenate([chosen, jnp.broadcast_to(jnp.arange(n_prefix, L), (B, M))], axis=1)
            take = lambda a: jnp.take_along_axis(a, sel_BxK.reshape(B, -1, *([1] * (a.ndim - 2))), axis=1)
            x, pos, idx, valid = take(x), take(pos), take(idx), take(valid)
        return x, pos, idx, valid

    def _block(self, block: nnx.Module, keys: _Keys, *args):
        """``block(*args, keys)``, rematerialised in the backward pass when ``cfg.remat``."""
        if not self.cfg.remat:
            return block(*args, keys)
        given = tuple(keys() for _ in range(_KEYS_PER_BLOCK))
        return nnx.remat(lambda b, g, *a: b(*a, _GivenKeys(*g)))(block, given, *args)

    def readout(self, z_BxMxD) -> jax.Array:
        """Logits [B, M, V] (float32) of the latents after the last block: final LN, projection."""
        return self.logits(self.ln_final(z_BxMxD)).astype(jnp.float32)

    # -------------------------------------------------------------------------------- forward
    def __call__(
        self,
        tokens_BxL: jax.Array,
        positions_BxLxP: jax.Array | None = None,
        *,
        rng: jax.Array | None = None,
        num_latents: int | None = None,
    ) -> jax.Array:
        """Logits [B, M, V] for the last M input positions (M = num_latents or the config's).

        ``rng=None`` is evaluation: no dropout, no context restriction, deterministic.
        """
        cfg = self.cfg
        B, L = tokens_BxL.shape
        M = min(num_latents or cfg.num_latents, L)
        if positions_BxLxP is None:
            if cfg.positions_from_data:
                raise ValueError("this model takes positions from the data, but none were given")
            positions_BxLxP = positions.implicit_positions(B, L)
        keys = _Keys(rng)
        valid_BxL = tokens_BxL != PAD_ID
        idx_L = jnp.arange(L, dtype=jnp.int32)
        # Queries: the last M embedded inputs (before any context restriction).
        z_BxMxD = self.z_linear(self.embed_inputs(tokens_BxL[:, L - M :], positions_BxLxP[:, L - M :]))
        qpos_BxM = positions_BxLxP[:, L - M :, 0]
        q_idx_M = idx_L[L - M :]
        valid_BxM = valid_BxL[:, L - M :]
        # Keys: the (restricted) inputs. Embedding is per input, so restricting the tokens and
        # then embedding them equals embedding and then restricting.
        ktok, kpos, kidx, kvalid = self._restrict_inputs(
            tokens_BxL, positions_BxLxP, jnp.broadcast_to(idx_L, (B, L)), valid_BxL, M, keys()
        )
        kv_in, table = self.key_inputs(ktok, kpos)
        z = self._block(self.cross, keys, z_BxMxD, kv_in, qpos_BxM, kpos[..., 0], q_idx_M, kidx, kvalid, table)
        for layer in self.layers:
            z = self._block(layer, keys, z, qpos_BxM, q_idx_M, valid_BxM)
        return self.readout(z)


def count_params(model: nnx.Module) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
