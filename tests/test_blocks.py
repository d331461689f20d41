"""One implementation of each block: the KV cache (repro/model/cache.py) runs the blocks' own code.

A block whose pieces (``queries`` / ``project_kv``, ``project``, ``finish``) are changed by a
subclass must change the full forward and the cached decoding alike: cached == full forward
still holds with the changed block. A cache that re-implemented a block (reaching into its
layers) would keep computing the unchanged block and fail here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from repro.config import ModelConfig
from repro.data.tokens import NUM_RESERVED, PAD_ID, SOS_ID
from repro.model import PerceiverAR, perceiver_ar
from repro.model.cache import decode_step, prefill

V, L, M = 16, 24, 4
STEPS = M - 1  # decode steps after a one-latent prefill: the cache then holds M latents
ATOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}
CFG = ModelConfig(
    vocab_size=V, max_context=L, num_latents=M, d_model=16, num_layers=2, cross_heads=2, self_heads=2,
    dropout=0.0, final_init_zeros=False, position_encoding="rotary",
)  # fmt: skip


def _finish_mlp_twice(self, z_BxMxD, heads_BxMxHxK, keys=None):
    """``finish`` with the MLP residual scaled by 2 (evaluation: no dropout)."""
    z = z_BxMxD + self.attn.output(heads_BxMxHxK)
    return z + 2.0 * self.mlp(self.ln_mlp(z))


class CrossFinish(perceiver_ar.CrossAttendBlock):
    finish = _finish_mlp_twice


class SelfFinish(perceiver_ar.SelfAttendBlock):
    finish = _finish_mlp_twice


class CrossProjections(perceiver_ar.CrossAttendBlock):
    def queries(self, z_BxMxD, qpos_BxM):
        return 1.5 * super().queries(z_BxMxD, qpos_BxM)

    def project_kv(self, kv_in, kpos_BxL, table_VxDi=None):
        k, v = super().project_kv(kv_in, kpos_BxL, table_VxDi)
        return k, 2.0 * v


class SelfProjections(perceiver_ar.SelfAttendBlock):
    def project(self, z_BxMxD, pos_BxM):
        q, k, v = super().project(z_BxMxD, pos_BxM)
        return 1.5 * q, k, 2.0 * v


PATCHES = {"finish": (CrossFinish, SelfFinish), "projections": (CrossProjections, SelfProjections)}


def build(cross_cls=None, self_cls=None) -> PerceiverAR:
    """The model with its blocks of the given classes (same seed, so the same parameters)."""
    with pytest.MonkeyPatch.context() as mp:
        if cross_cls is not None:
            mp.setattr(perceiver_ar, "CrossAttendBlock", cross_cls)
            mp.setattr(perceiver_ar, "SelfAttendBlock", self_cls)
        return PerceiverAR(CFG, rngs=nnx.Rngs(0))


@functools.cache
def inputs():
    """Left-padded prefill windows (an SOS-only prompt and a 5-token one) and forced tokens."""
    rng = np.random.default_rng(0)
    windows = np.full((2, L), PAD_ID, np.int32)
    windows[0, -1] = SOS_ID
    windows[1, -5:] = [SOS_ID, *rng.integers(NUM_RESERVED, V, 4)]
    return jnp.asarray(windows), jnp.asarray(rng.integers(NUM_RESERVED, V, (2, STEPS)), jnp.int32)


def cached_logits(model) -> np.ndarray:
    """Logits [B, 1 + STEPS, V]: a one-latent prefill, then one decode step per forced token."""
    graphdef, state = nnx.split(model)

    def run(state, windows_BxL, forced_BxS):
        m = nnx.merge(graphdef, state)
        logits, cache = prefill(m, windows_BxL, num_latents=1)
        out = [logits]
        for s in range(STEPS):
            logits, cache = decode_step(m, cache, forced_BxS[:, s])
            out.append(logits)
        return jnp.stack(out, axis=1)

    return np.asarray(jax.jit(run, compiler_options=FAST_COMPILE)(state, *inputs()))


def full_logits(model) -> np.ndarray:
    """The same positions' logits from full forwards: step s sees the window shifted by s forced
    tokens, with 1 + s latents (as many as the cache holds)."""
    graphdef, state = nnx.split(model)

    def run(state, windows_BxL, forced_BxS):
        m = nnx.merge(graphdef, state)
        seq = jnp.concatenate([windows_BxL, forced_BxS], axis=1)
        return jnp.stack([m(seq[:, s : s + L], num_latents=1 + s)[:, -1] for s in range(1 + STEPS)], axis=1)

    return np.asarray(jax.jit(run, compiler_options=FAST_COMPILE)(state, *inputs()))


@functools.cache
def plain():
    model = build()
    return model, cached_logits(model), full_logits(model)


@pytest.mark.parametrize("patch", list(PATCHES))
def test_cache_runs_the_blocks_own_code(patch):
    model, cached, full = plain()
    np.testing.assert_allclose(cached, full, atol=ATOL)  # the unchanged model, for reference
    cross_cls, self_cls = PATCHES[patch]
    patched = build(cross_cls, self_cls)
    assert isinstance(patched.cross, cross_cls) and all(isinstance(b, self_cls) for b in patched.layers)
    same_params = jax.tree.map(np.array_equal, nnx.state(model, nnx.Param), nnx.state(patched, nnx.Param))
    assert all(jax.tree.leaves(same_params))
    p_cached, p_full = cached_logits(patched), full_logits(patched)
    # The change matters (at every step: prefill and each decode step) ...
    assert np.abs(p_full - full).max(axis=(0, 2)).min() > 1e-2
    # ... and the cache computes it exactly as the full forward does.
    np.testing.assert_allclose(p_cached, p_full, atol=ATOL, err_msg=patch)
