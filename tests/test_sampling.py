"""KV-cached decoding (repro/model/cache.py) and sampling (repro/sample/sampler.py).

Cached logits are compared with full forwards at an absolute tolerance of 1e-4 (float32; the
observed differences are ~1e-6). Tiny models (L = 24 inputs, M = 4 latents, d = 16), compiled
at a low XLA optimisation level; one generation program and one reference program per model.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from repro.config import ModelConfig
from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.model import PerceiverAR
from repro.model.cache import supports_cache
from repro.sample.sampler import (
    SampleConfig,
    choose,
    codebook_constraint,
    generate,
    periodic_constraint,
    process_logits,
)

V, L, M = 16, 24, 4
ATOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def tiny(position_encoding="rotary", from_data=False, layers=1, seed=0, **kw) -> PerceiverAR:
    cfg = ModelConfig(
        vocab_size=V, max_context=L, num_latents=M, d_model=16, num_layers=layers, cross_heads=2, self_heads=2,
        dropout=0.0, final_init_zeros=False, position_encoding=position_encoding, positions_from_data=from_data,
        position_table_sizes=(64,) if from_data else (), **kw,
    )  # fmt: skip
    return PerceiverAR(cfg, rngs=nnx.Rngs(seed))


def reference_logits(model, windows_SxT, positions_SxTx1, latents=tuple(range(1, M + 1))):
    """Last-position logits of full forwards over (left-padded) windows, for each number of
    latents in ``latents``: [len(latents), S, V]; one jitted program."""
    graphdef, state = nnx.split(model)
    pfd = model.cfg.positions_from_data

    def f(state, w, p):
        m = nnx.merge(graphdef, state)
        return jnp.stack([m(w, p if pfd else None, num_latents=n)[:, -1] for n in latents])

    return np.asarray(jax.jit(f, compiler_options=FAST_COMPILE)(state, windows_SxT, positions_SxTx1))


def latent_schedule(num_steps, initial, fill):
    """Latents in the cache at each step: ``initial`` after the prompt, +1 per decoded token, and
    a reset to ``fill`` (a full forward) whenever the cache was full."""
    n = [initial]
    for _ in range(num_steps - 1):
        n.append(fill if n[-1] == M else n[-1] + 1)
    return n


CASES = {
    "rotary-implicit-2layers": dict(position_encoding="rotary", layers=2),
    "sinusoidal-data": dict(position_encoding="sinusoidal", from_data=True),
    "learned-data": dict(position_encoding="learned", from_data=True),
    "rotary-data": dict(position_encoding="rotary", from_data=True),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "rotary-data" else c for c in CASES])
def test_cached_logits_equal_full_forward(case):
    """Teacher-forced decoding through the cache, prompts of lengths 1 (SOS only), 4 and 9 in one
    left-padded batch, across several cache resets: every step's logits equal a full forward over
    the last L inputs with as many latents as the cache holds (before a reset: the prompt's
    latents plus one per decoded token; after a reset: ``fill``). Once the sequence is longer than
    L, latents decoded from older windows stay in the cache, so only the reset steps (which
    recompute everything) are compared there."""
    model = tiny(**CASES[case])
    rng = np.random.default_rng(1)
    lens, P, N = [1, 4, 9], 9, 28  # the longest row reaches 9 + 28 = 37 > L = 24 tokens
    full = [np.concatenate([[SOS_ID], rng.integers(NUM_RESERVED, V, P + N - 1)]).astype(np.int32) for _ in lens]
    prompts = [f[:n] for f, n in zip(full, lens, strict=True)]
    forced = np.stack([f[n : n + N] for f, n in zip(full, lens, strict=True)])
    forced[forced == EOS_ID] = NUM_RESERVED  # no early stop
    cfg = SampleConfig(temperature=0.0, initial_fill=1, reset_fill=2)
    out = generate(model, prompts, N, cfg, forced=forced, return_logits=True, compiler_options=FAST_COMPILE)
    assert out.logits.shape == (3, N, V)
    for g, f in zip(out.generated, forced, strict=True):
        np.testing.assert_array_equal(g, f)

    # Reference windows: the last L inputs before each predicted token, left-padded; positions
    # from the data are 1-based offsets (PAD: 0).
    S = len(lens) * N
    win, pos = np.zeros((S, L), np.int32), np.zeros((S, L, 1), np.int32)
    for b, n in enumerate(lens):
        seq = np.concatenate([prompts[b], forced[b]])
        for s in range(N):
            T = n + s
            lo = max(0, T - L)
            win[b * N + s, L - (T - lo) :] = seq[lo:T]
            pos[b * N + s, L - (T - lo) :, 0] = np.arange(lo, T) + 1
    ref = reference_logits(model, jnp.asarray(win), jnp.asarray(pos))  # [M, S, V]
    sched = latent_schedule(N, 1, 2)
    assert sched[:8] == [1, 2, 3, 4, 2, 3, 4, 2]
    checked = 0
    for b, n in enumerate(lens):
        for s in range(N):
            exact = n + s <= L or sched[s] == 2  # the whole row is in the cache, or a reset
            if not exact:
                continue
            want = ref[sched[s] - 1, b * N + s]
            np.testing.assert_allclose(out.logits[b, s], want, atol=ATOL, err_msg=f"{case} row {b} step {s}")
            checked += 1
    assert checked > 60


def test_absolute_implicit_positions_recompute():
    """Implicit absolute positions change every cached key with each new token: the sampler
    recomputes a full forward with all M latents instead (exact by construction)."""
    model = tiny("sinusoidal")
    assert not supports_cache(model.cfg) and supports_cache(tiny("learned", from_data=True).cfg)
    seq = np.array([SOS_ID, 5, 6, 7, 8, 9, 10, 11], np.int32)
    out = generate(
        model, [seq[:3]], 5, SampleConfig(temperature=0), forced=seq[None, 3:], return_logits=True,
        compiler_options=FAST_COMPILE,
    )  # fmt: skip
    windows = np.stack([np.pad(seq[: 3 + s], (L - 3 - s, 0)) for s in range(5)])  # left-padded
    want = reference_logits(model, jnp.asarray(windows), None, latents=(M,))[0]
    np.testing.assert_allclose(out.logits[0], want, atol=ATOL)


def test_generate_rejects_bad_settings():
    model = tiny()
    with pytest.raises(ValueError):
        generate(model, [np.array([SOS_ID])], 2, SampleConfig(reset_fill=M))
    with pytest.raises(ValueError):
        generate(model, [np.array([], np.int32)], 2)


# ----------------------------------------------------------------------------- token choice


def test_greedy_is_argmax_and_never_pad():
    logits = jnp.array([[5.0, 1.0, 2.0, 3.0], [0.0, 1.0, 4.0, 2.0]])
    tok = choose(jax.random.key(0), logits, SampleConfig(temperature=0))
    np.testing.assert_array_equal(np.asarray(tok), [3, 2])  # row 0: PAD (id 0) has the max logit


def test_temperature_scales_logits():
    logits = jnp.array([[0.0, 1.0, 2.0, 4.0]])
    got = process_logits(logits, SampleConfig(temperature=2.0))
    np.testing.assert_allclose(np.asarray(got[0, 1:]), [0.5, 1.0, 2.0])


def _draws(logits, cfg, n=2000):
    keys = jax.random.split(jax.random.key(cfg.seed), n)
    draw = jax.jit(jax.vmap(lambda k: choose(k, logits, cfg)), compiler_options=FAST_COMPILE)
    return np.asarray(draw(keys)).ravel()


def test_top_k_keeps_the_k_most_likely():
    logits = jnp.log(jnp.array([[1e-9, 0.1, 0.3, 0.05, 0.25, 0.2, 0.1]]))
    seen = set(_draws(logits, SampleConfig(temperature=1.0, top_k=3)).tolist())
    assert seen == {2, 4, 5}


def test_top_p_keeps_the_nucleus():
    probs = jnp.array([[1e-9, 0.5, 0.3, 0.15, 0.05]])
    assert set(_draws(jnp.log(probs), SampleConfig(top_p=0.7)).tolist()) == {1, 2}
    assert set(_draws(jnp.log(probs), SampleConfig(top_p=0.85)).tolist()) == {1, 2, 3}
    assert set(_draws(jnp.log(probs), SampleConfig(top_p=0.1)).tolist()) == {1}  # at least one token


def test_sampling_follows_the_distribution():
    probs = np.array([1e-9, 0.6, 0.3, 0.1])
    freq = np.bincount(_draws(jnp.log(jnp.asarray(probs))[None], SampleConfig(seed=3), 4000), minlength=4) / 4000
    np.testing.assert_allclose(freq, probs, atol=0.03)


def test_codebook_constraint():
    allowed = codebook_constraint(3, 4)  # V = 3 + 12: R ids 3..6, G 7..10, B 11..14 (+ EOS)
    m = np.asarray(allowed(jnp.array([1, 2, 3, 4])))
    assert m.shape == (4, 15)
    for row, level in zip(m, [0, 1, 2, 0], strict=True):
        assert set(np.flatnonzero(row)) == {EOS_ID, *range(3 + 4 * level, 7 + 4 * level)}


def _constraint_eos_at_7():
    codes = codebook_constraint(3, 4)  # vocabulary 15 < V = 16: the last id is never allowed
    eos_only = jnp.zeros((1, V), bool).at[0, EOS_ID].set(True)

    def allowed(offset):
        rows = jnp.pad(codes(offset), ((0, 0), (0, 1))).at[:, EOS_ID].set(False)
        return jnp.where((offset == 7)[:, None], eos_only, rows)

    return allowed


ALLOWED = _constraint_eos_at_7()


def test_generate_constraints_eos_and_seed():
    """Per-position constraints hold at every generated position, each sequence stops at its EOS
    (later tokens are PAD and not returned), and the seed alone decides the sample."""
    model = tiny(seed=5)
    prompts = [np.array([SOS_ID]), np.array([SOS_ID, 3, 7, 11])]
    cfg = SampleConfig(temperature=1.0, top_p=0.95, seed=0)
    kw = dict(allowed=ALLOWED, compiler_options=FAST_COMPILE)
    a = generate(model, prompts, 12, cfg, **kw)
    for p, g in zip(prompts, a.generated, strict=True):
        assert len(p) + len(g) == 8 and g[-1] == EOS_ID  # EOS at offset 7
        for off, t in enumerate(g[:-1], start=len(p)):
            level = (off - 1) % 3
            assert 3 + 4 * level <= t < 7 + 4 * level, (off, t)
    assert a.stopped.all()
    same = generate(model, prompts, 12, cfg, **kw)
    other = generate(model, prompts, 12, SampleConfig(temperature=1.0, top_p=0.95, seed=1), **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a.generated, same.generated, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.generated, other.generated, strict=True))


def test_periodic_constraint_alignment():
    table = np.eye(3, 5, dtype=bool)
    got = np.asarray(periodic_constraint(table, start=1)(jnp.array([1, 2, 3, 4])))
    np.testing.assert_array_equal(got, table[[0, 1, 2, 0]])


# ----------------------------------------------------------------------------- copy task


def test_copy_greedy_sampling_reproduces_teacher_forced_argmax(tmp_path):
    """With one latent on the last prompt token (the copy section's ``initial_fill=1``) the
    cache grows over the second half exactly as the training / teacher-forced windows, so greedy
    samples are the teacher-forced argmax predictions: a model with 100 % mirrored-half accuracy
    mirrors every prompt. Checked on an untrained smoke-preset model, then the sample files."""
    from experiments import SECTIONS

    section = SECTIONS["copy"]
    exp = section.presets["smoke"]
    model = PerceiverAR(exp.model, rngs=nnx.Rngs(0))
    source = section.source(exp)
    pr = section.prompts(exp, source, 2, None)
    prompts, num_new, expected = pr.tokens, pr.num_new, pr.expected
    assert len(prompts[0]) == exp.data.seq_len // 2 and num_new == exp.data.seq_len // 2
    cfg = SampleConfig(**section.sampling(exp).defaults, stop_at_eos=False)  # untrained: EOS may come early
    out = generate(model, prompts, num_new, cfg, compiler_options=FAST_COMPILE)
    seqs = np.stack([np.concatenate([p, g]) for p, g in zip(prompts, out.generated, strict=True)])
    assert seqs.shape == (2, exp.data.seq_len)
    pos = np.broadcast_to(np.arange(1, exp.data.seq_len)[None, :, None], (2, exp.data.seq_len - 1, 1))
    # The teacher-forced window of evaluation: all inputs, M = 16 latents ending at the last one.
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st, w, p: nnx.merge(graphdef, st)(w, p), compiler_options=FAST_COMPILE)
    logits = np.array(forward(state, jnp.asarray(seqs[:, :-1]), jnp.asarray(pos)))  # [2, M, V]
    logits[..., 0] = -np.inf  # the sampler never picks PAD
    np.testing.assert_array_equal(logits.argmax(-1), seqs[:, -num_new:])

    summary = section.write_samples(exp, pr, expected, tmp_path, {"temperature": 0})
    assert summary["mirrored_fraction"] == 1.0 and summary["mean_token_accuracy"] == 1.0
    rows = json.loads((tmp_path / "copy.json").read_text())["samples"]
    assert rows[0]["output"][-1] == "EOS" and rows[0]["output"][:-1] == rows[0]["prompt"][::-1]
    assert "MIRRORS" in (tmp_path / "copy.txt").read_text()
    p = section.prompts(exp, source, 1, "1, 2 250")
    assert list(p.tokens[0]) == [SOS_ID, 4, 5, 253] and p.num_new == 4 and list(p.expected[0]) == [253, 5, 4, EOS_ID]
    with pytest.raises(ValueError):
        section.prompts(exp, source, 1, "256")


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_eval_protocol_and_sample(tmp_path, repro):
    """`repro eval --protocol` and `repro sample` on a (barely) trained smoke run."""
    wd = tmp_path / "run"
    cli = repro

    def repro(*args):
        r = cli(*args)
        assert r.returncode == 0, r.stderr
        return r

    repro("run", "copy", "--preset", "smoke", "--workdir", str(wd), "--steps", "2", "--no-progress")
    r = repro("eval", "copy", "--workdir", str(wd), "--protocol", "stride1", "--max-examples", "2")
    assert "protocol stride1: 2 documents" in r.stdout
    assert json.loads((wd / "evals" / "validation_stride1.json").read_text())["metrics"]["protocol"] == "stride1"
    r = repro("eval", "copy", "--workdir", str(wd))
    assert "protocol blocked:16" in r.stdout
    repro("sample", "copy", "--workdir", str(wd), "--num", "2")
    summary = json.loads((wd / "samples" / "copy.json").read_text())["summary"]
    assert summary["samples"] == 2 and summary["settings"]["temperature"] == 0.0


def test_vocabulary_limit_never_samples_past_the_data_vocabulary():
    """A model whose output ids 12..15 are the likeliest, over data of 12 ids: greedy and sampled
    tokens stay below 12 (an id past the data's vocabulary cannot be decoded)."""
    from repro.sample.sampler import vocabulary_limit

    model = tiny(seed=3)
    model.logits.bias.value = model.logits.bias.value.at[12:].set(50.0)
    prompts = [np.array([SOS_ID, 3, 4])]
    free = generate(model, prompts, 6, SampleConfig(temperature=0.0), compiler_options=FAST_COMPILE)
    assert (free.generated[0] >= 12).all()  # unmasked: the extra ids win
    limit = vocabulary_limit(None, 12, V)
    assert vocabulary_limit(None, V, V) is None and limit == vocabulary_limit(None, 12, V)  # hashable, equal
    for cfg in (SampleConfig(temperature=0.0), SampleConfig(temperature=1.0, seed=2)):
        g = generate(model, prompts, 6, cfg, allowed=limit, compiler_options=FAST_COMPILE).generated[0]
        assert len(g) and (g < 12).all(), g
    both = vocabulary_limit(ALLOWED, 12, V)
    np.testing.assert_array_equal(
        np.asarray(both(jnp.array([1, 2]))), np.asarray(ALLOWED(jnp.array([1, 2]))) & (np.arange(V) < 12)
    )
