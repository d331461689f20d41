"""Autoregressive sampling: KV-cached decoding with the paper's cache reset, and token choice.

    generate(model, prompts, num_new, SampleConfig(temperature=0.8, top_p=0.95, seed=1))

Decoding (``repro/model/cache.py``): the prompt's last L = max_context inputs are prefilled with
``initial_fill`` latents, then every step decodes one token per sequence from the cache. When the
latent cache is full (M latents) the next step is a reset, as the paper (Appendix E.3) and the
official ``sample_utils.sample_position(condition_on='most_recent_only')``: a full forward over
the last L inputs refills ``reset_fill`` latents (official: M / 2; flaxformer: max(M - 128,
M / 2)). So the logits of every step equal a full forward with the number of latents the cache
holds, while the sequence fits in L inputs, and at every reset after that (tested).
``use_cache=False`` recomputes a full forward with all M latents for every token instead (what a
sampler without a cache does; the baseline of ``benchmarks/sampling.py``); so do models with
implicit absolute positions, whose cached keys would change with every token
(``cache.supports_cache``).

Token choice, in this order: never PAD (it is padding, not a token); never an id past the data's
vocabulary (``vocabulary_limit``: a model may have more output ids than its tokenizer decodes);
the per-position constraint (``allowed(offset) -> bool [B, V]``, e.g. only the legal values of
an R/G/B sub-pixel or of an audio codebook level); temperature (0 = greedy argmax); top-k; top-p (nucleus, over the
temperature-scaled distribution, as Hugging Face; the official code applies top-p first).
Sampling keys are ``fold_in(key(seed), step)``. A sequence stops at EOS (``stop_at_eos``): its
later tokens are PAD, and the loop ends when every sequence has stopped.

Teacher forcing (``forced=``) feeds given tokens instead of sampled ones; with ``score=True`` the
loop records each forced token's NLL (the ``cached:F`` evaluation protocol, ``repro/eval/cached.py``).

Prompts are 1-D token arrays (normally starting with SOS) of any length >= 1, left-padded with
PAD to a common length; generated tokens are written after each prompt.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from repro.data.tokens import EOS_ID, NUM_RESERVED, PAD_ID
from repro.model import cache

NEG = -1e30


@dataclass(frozen=True)
class SampleConfig:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0
    reset_fill: int = 0  # latents a cache reset refills; 0 = num_latents // 2 (official)
    initial_fill: int = 0  # latents of the first prefill (the prompt); 0 = reset_fill
    stop_at_eos: bool = True
    use_cache: bool = True  # False: a full forward with all M latents for every token


def periodic_constraint(allowed_KxV, start: int = 1) -> Callable:
    """``allowed(offset)``: row ``(offset - start) mod K`` of ``allowed_KxV`` for the token at
    sequence offset ``offset`` (SOS is offset 0, so ``start=1`` aligns row 0 with the first
    data token). Reserved ids are whatever the rows allow."""
    table = jnp.asarray(np.asarray(allowed_KxV, bool))

    def allowed(offset_B):
        return table[jnp.mod(offset_B - start, table.shape[0])]

    return allowed


def codebook_constraint(num_levels: int, codes_per_level: int, *, start: int = 1, eos: bool = True):
    """Interleaved codebooks with disjoint id ranges (official ``process_logits``): the token at
    offset o must come from level ``(o - start) mod num_levels``, ids
    ``NUM_RESERVED + level * codes .. + codes``; plus EOS when ``eos``. Images: R/G/B sub-pixels
    are ``codebook_constraint(3, 256)``; SoundStream 12 kbps audio ``codebook_constraint(24, 1024)``."""
    V = NUM_RESERVED + num_levels * codes_per_level
    table = np.zeros((num_levels, V), bool)
    for lv in range(num_levels):
        table[lv, NUM_RESERVED + lv * codes_per_level : NUM_RESERVED + (lv + 1) * codes_per_level] = True
    table[:, EOS_ID] = eos
    return periodic_constraint(table, start)


@dataclass(frozen=True)
class _VocabularyLimit:
    """``allowed`` (or everything) and only ids below ``data_vocab``: hashable, so the jitted
    sampling loop is compiled once per constraint."""

    allowed: Callable | None
    data_vocab: int
    model_vocab: int

    def __call__(self, offset_B):
        ok = jnp.arange(self.model_vocab) < self.data_vocab
        if self.allowed is None:
            return jnp.broadcast_to(ok, (offset_B.shape[0], self.model_vocab))
        return self.allowed(offset_B) & ok


def vocabulary_limit(allowed: Callable | None, data_vocab: int, model_vocab: int) -> Callable | None:
    """``allowed`` restricted to the ids ``< data_vocab`` (the data's vocabulary, reserved ids
    included), for a model whose output vocabulary (``model_vocab``) is larger: an id past the
    data's cannot be decoded (e.g. a word tokenizer's ``words[id]``). ``allowed`` itself when the
    two sizes agree."""
    if data_vocab >= model_vocab:
        return allowed
    return _VocabularyLimit(allowed, int(data_vocab), int(model_vocab))


def process_logits(logits_BxV, cfg: SampleConfig, allowed_BxV=None):
    """Masked, temperature-scaled logits (masked entries = -1e30); for temperature 0 the
    constrained logits unscaled (to be argmax-ed)."""
    logits = logits_BxV.astype(jnp.float32).at[:, PAD_ID].set(NEG)
    if allowed_BxV is not None:
        logits = jnp.where(allowed_BxV, logits, NEG)
    if cfg.temperature <= 0:
        return logits
    logits = logits / cfg.temperature
    if cfg.top_k > 0:
        kth = jax.lax.top_k(logits, min(cfg.top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, NEG)
    if cfg.top_p < 1.0:
        srt = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(srt, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
        keep = before < cfg.top_p  # the smallest top set whose mass reaches top_p
        thresh = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= thresh, logits, NEG)
    return logits


def choose(key, logits_BxV, cfg: SampleConfig, allowed_BxV=None):
    logits = process_logits(logits_BxV, cfg, allowed_BxV)
    if cfg.temperature <= 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@dataclass
class Generated:
    """Output of :func:`generate` (host arrays)."""

    sequences: list[np.ndarray]  # prompt + generated tokens (up to and including EOS)
    generated: list[np.ndarray]  # the generated tokens only
    stopped: np.ndarray  # [B] bool: ended with EOS (or, with score=True, a forced PAD)
    logits: np.ndarray | None = None  # [B, num_new, V] raw logits of every step (return_logits)
    target_nll: np.ndarray | None = None  # [B, num_new] -log p(forced token) of every step (score)
    target_correct: np.ndarray | None = None  # [B, num_new] the raw logits' argmax is the forced token (score)


def _fills(cfg: SampleConfig, M: int) -> tuple[int, int]:
    fill = cfg.reset_fill or max(M // 2, 1)
    init = cfg.initial_fill or fill
    for name, v in (("reset_fill", fill), ("initial_fill", init)):
        if not 1 <= v <= M:
            raise ValueError(f"{name}={v} must be in [1, num_latents={M}]")
    if fill == M:
        raise ValueError(f"reset_fill must be < num_latents={M}, or every step would be a reset")
    return init, fill


def _run(state, buf, pos, forced, seed, *, graphdef, num_new, cfg, use_cache, fills, allowed, return_logits, score, P):
    model = nnx.merge(graphdef, state)
    mc = model.cfg
    L, M = mc.max_context, mc.num_latents
    B = buf.shape[0]
    has_pos = pos is not None
    key = jax.random.key(seed)
    init_fill, fill = fills
    offset0 = jnp.sum(buf[:, L : L + P] != PAD_ID, axis=1)  # prompt lengths = offset of the 1st new token
    # Window of the last L inputs before sequence index j: buffer columns [j, j + L).
    window = lambda b, j: jax.lax.dynamic_slice_in_dim(b, j, L, axis=1)

    def full(b, s):  # recompute: a full forward with all M latents over the last L inputs
        wp = window(pos, P + s) if has_pos else None
        return model(window(b, P + s), wp, num_latents=M)[:, -1].astype(jnp.float32)

    def pick(s, logits, done, b):
        if forced is not None:
            tok = forced[:, s]
        else:
            ok = allowed(offset0 + s) if allowed is not None else None
            tok = choose(jax.random.fold_in(key, s), logits, cfg, ok)
        tok = jnp.where(done, PAD_ID, tok)
        b = jax.lax.dynamic_update_slice_in_dim(b, tok[:, None], L + P + s, axis=1)
        if cfg.stop_at_eos:
            done = done | (tok == EOS_ID)
        if score:  # a forced PAD ends its row (documents of different lengths in one batch)
            done = done | (tok == PAD_ID)
        return b, done

    def record(s, logits, logs):
        logits_buf, score_buf = logs
        if return_logits:
            logits_buf = logits_buf.at[s].set(logits)
        if score:  # the forced token's NLL and whether it is the argmax, as train/step.py token_losses
            lg, tgt = logits.astype(jnp.float32), forced[:, s]
            nll = jax.nn.logsumexp(lg, axis=-1) - jnp.take_along_axis(lg, tgt[:, None], axis=-1)[:, 0]
            hit = (jnp.argmax(lg, axis=-1) == tgt).astype(jnp.float32)
            score_buf = score_buf.at[s].set(jnp.stack([nll, hit], axis=-1))
        return logits_buf, score_buf

    done = jnp.zeros(B, bool)
    logs = (
        jnp.zeros((num_new, B, mc.vocab_size), jnp.float32) if return_logits else None,
        jnp.zeros((num_new, B, 2), jnp.float32) if score else None,
    )

    if use_cache:
        w, wp = window(buf, P), (window(pos, P) if has_pos else None)
        logits, kv = cache.prefill(model, w, wp, num_latents=init_fill)
    else:
        logits, kv = full(buf, 0), None
    logs = record(0, logits, logs)
    buf, done = pick(0, logits, done, buf)

    def running(carry):
        s, _, done, _, _ = carry
        return (s < num_new) & ~jnp.all(done)

    def recompute_step(carry):
        s, b, done, kv, logs = carry
        logits = full(b, s)
        b, done = pick(s, logits, done, b)
        return s + 1, b, done, kv, record(s, logits, logs)

    def decode(carry):
        s, b, done, kv, logs = carry
        p1 = pos[:, L + P + s - 1] if has_pos else None
        logits, kv = cache.decode_step(model, kv, b[:, L + P + s - 1], p1)
        b, done = pick(s, logits, done, b)
        return s + 1, b, done, kv, record(s, logits, logs)

    def reset(carry):
        s, b, done, kv, logs = carry
        wp = window(pos, P + s) if has_pos else None
        logits, kv = cache.prefill(model, window(b, P + s), wp, num_latents=fill)
        b, done = pick(s, logits, done, b)
        return s + 1, b, done, kv, record(s, logits, logs)

    def cycle(carry):
        # Decode until the latent cache is full (an inner loop, so the cache is updated in place),
        # then reset it with a full forward: one conditional per M - fill tokens.
        carry = jax.lax.while_loop(lambda c: running(c) & (c[3].n < M), decode, carry)
        return jax.lax.cond(running(carry), reset, lambda c: c, carry)

    carry = (jnp.int32(1), buf, done, kv, logs)
    _, buf, done, _, logs = jax.lax.while_loop(running, cycle if use_cache else recompute_step, carry)
    return buf, done, logs


@functools.cache
def _runner(compiler_options: tuple = ()):
    static = ("graphdef", "num_new", "cfg", "use_cache", "fills", "allowed", "return_logits", "score", "P")
    return jax.jit(_run, static_argnames=static, compiler_options=dict(compiler_options) or None)


def generate(
    model,
    prompts: Sequence[np.ndarray],
    num_new: int,
    cfg: SampleConfig = SampleConfig(),
    *,
    positions_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    allowed: Callable | None = None,
    forced: np.ndarray | None = None,
    return_logits: bool = False,
    score: bool = False,
    compiler_options: dict | None = None,
) -> Generated:
    """Generate up to ``num_new`` tokens after each prompt.

    positions_fn: for models with positions from the data, maps sequence offsets [B, T] (SOS = 0)
        to positions [B, T, P]; default: 1-based offsets (``repro/data/windows.py``).
    allowed: per-position constraint ``allowed(offset_B) -> bool [B, V]`` (jax-traceable, hashable:
        e.g. :func:`codebook_constraint`).
    compiler_options: XLA options for the jitted loop (tests use a low optimisation level).
    forced: [B, num_new] tokens to feed instead of the sampled ones (teacher forcing: scoring a
        continuation through exactly the decoding path; used by the tests).
    return_logits: also return every step's raw logits ([B, num_new, V]: small continuations only).
    score: with ``forced``, return each step's NLL of its forced token and whether the raw logits'
        argmax is that token (``target_nll`` / ``target_correct``, [B, num_new]; the ``cached:F``
        evaluation protocol, ``repro/eval/cached.py``); a forced PAD then ends its row, and the
        loop ends when every row has.
    """
    mc = model.cfg
    L, M = mc.max_context, mc.num_latents
    if num_new < 1:
        raise ValueError("num_new must be >= 1")
    if score and forced is None:
        raise ValueError("score=True scores forced tokens: give forced=")
    prompts = [np.asarray(p, np.int32).ravel() for p in prompts]
    if any(len(p) == 0 or (p == PAD_ID).all() for p in prompts):
        raise ValueError("every prompt needs at least one token (normally SOS)")
    B, P = len(prompts), max(len(p) for p in prompts)
    lens = np.array([len(p) for p in prompts])
    buf = np.full((B, L + P + num_new), PAD_ID, np.int32)
    for i, p in enumerate(prompts):
        buf[i, L + P - len(p) : L + P] = p
    pos = None
    if mc.positions_from_data:
        offsets = np.arange(P + num_new)[None, :] - (P - lens)[:, None]  # SOS = 0, prompt left-padded
        fn = positions_fn or (lambda o: (o + 1)[..., None])
        pos_seq = np.where((offsets >= 0)[..., None], fn(np.maximum(offsets, 0)), 0).astype(np.int32)
        pos = np.concatenate([np.zeros((B, L, pos_seq.shape[-1]), np.int32), pos_seq], axis=1)
    use_cache = cfg.use_cache and cache.supports_cache(mc)
    fills = _fills(cfg, M) if use_cache else (M, M)
    graphdef, state = nnx.split(model)
    run = _runner(tuple(sorted((compiler_options or {}).items())))
    out, done, logs = run(
        state, jnp.asarray(buf), None if pos is None else jnp.asarray(pos),
        None if forced is None else jnp.asarray(forced, jnp.int32), jnp.uint32(cfg.seed),
        graphdef=graphdef, num_new=num_new, cfg=dataclasses.replace(cfg, seed=0), use_cache=use_cache, fills=fills,
        allowed=allowed, return_logits=return_logits, score=score, P=P,
    )  # fmt: skip
    out, done = np.asarray(out), np.asarray(done)
    gen_all = out[:, L + P :]
    generated, sequences = [], []
    for i in range(B):
        g = gen_all[i]
        stop = np.flatnonzero(g == EOS_ID) if cfg.stop_at_eos else np.zeros(0, int)
        g = g[: stop[0] + 1] if len(stop) else g
        generated.append(g)
        sequences.append(np.concatenate([prompts[i], g]))
    logits_buf, score_buf = logs
    logits = None if logits_buf is None else np.asarray(logits_buf).transpose(1, 0, 2)
    nll = hit = None
    if score_buf is not None:
        nll, hit = np.asarray(score_buf).transpose(2, 1, 0)  # [num_new, B, 2] -> 2 x [B, num_new]
    return Generated(sequences, generated, done, logits, target_nll=nll, target_correct=hit)
