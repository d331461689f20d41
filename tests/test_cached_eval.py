"""The ``cached:F`` evaluation protocol (repro/eval/cached.py): documents teacher-forced through
the sampler's KV-cached decoding loop, scored per target.

Tiny models (L = 24 inputs, M = 8 latents, d = 16) compiled at a low XLA optimisation level.
References are full forwards with a given number of latents (as tests/test_sampling.py), and
``stride1`` through its own windows; per-target NLLs are compared at 1e-4 (float32).
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from repro.config import ModelConfig
from repro.data.tokens import EOS_ID, NUM_RESERVED, PAD_ID, SOS_ID
from repro.eval import cached
from repro.eval.evaluate import evaluate
from repro.eval.protocols import Document, EvalBatches, parse_protocol
from repro.model import PerceiverAR
from repro.sample.sampler import SampleConfig, generate
from repro.train.step import token_losses

V, L, M = 16, 24, 8
ATOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def tiny(position_encoding="rotary", from_data=False, seed=0) -> PerceiverAR:
    cfg = ModelConfig(
        vocab_size=V, max_context=L, num_latents=M, d_model=16, num_layers=1, cross_heads=2, self_heads=2,
        dropout=0.0, final_init_zeros=False, position_encoding=position_encoding, positions_from_data=from_data,
        position_table_sizes=(128,) if from_data else (),
    )  # fmt: skip
    return PerceiverAR(cfg, rngs=nnx.Rngs(seed))


MODELS = {"rotary": ("rotary", False), "sinusoidal-data": ("sinusoidal", True)}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return tiny(*MODELS[request.param])


def doc(n_tokens, seed, *, evaluated=None, from_data=False) -> Document:
    """SOS, random content, EOS; positions from the data (when the model takes them) are not the
    default offsets, so the test sees that each document's own positions are used."""
    rng = np.random.default_rng(seed)
    toks = np.concatenate([[SOS_ID], rng.integers(NUM_RESERVED, V, n_tokens - 2), [EOS_ID]]).astype(np.int32)
    pos = (3 + 2 * np.arange(n_tokens))[:, None] if from_data else None
    return Document(toks, positions=pos, evaluated=evaluated)


def cached_per_target(model, docs, fill, batch_size=3, span=cached.SPAN):
    """{(document, target): (nll, correct)} of ``cached:fill``, and its metrics (through evaluate())."""
    graphdef, state = nnx.split(model)
    batches, step = cached.setup(model.cfg, graphdef, docs, f"cached:{fill}", batch_size,
                                 compiler_options=FAST_COMPILE, span=span)  # fmt: skip
    outputs, raws = [], []

    def recording(params, batch):  # evaluate() pads each batch to batch_size rows, then calls this
        outputs.append(step(params, batch))
        return outputs[-1]

    metrics = evaluate(recording, state, batches, batch_size, info=batches.info, on_batch=raws.append)
    out = {}
    for (nll, correct, mask), b in zip(outputs, raws, strict=True):
        for r, i in enumerate(b["seq_id"].tolist()):
            for t in np.flatnonzero(mask[r]).tolist():
                out[(i, t)] = (float(nll[r, t]), float(correct[r, t]))
    return out, metrics


_JITTED: dict = {}


def _jitted(model, kind, latents=()):
    """One jitted program per (model, kind): ``full`` = last-position logits with each number of
    ``latents``, ``stride1`` = a windowed eval step (nll, correct, mask)."""
    if (id(model), kind, latents) not in _JITTED:
        graphdef = nnx.graphdef(model)
        pfd = model.cfg.positions_from_data

        def full(state, w, p):
            m = nnx.merge(graphdef, state)
            return jnp.stack([m(w, p if pfd else None, num_latents=n)[:, -1] for n in latents])

        def stride1(state, batch):
            logits = nnx.merge(graphdef, state)(batch["inputs"], batch["positions"] if pfd else None)
            return token_losses(logits, batch["targets"], z_loss=0.0, label_smoothing=0.0)[1:]

        fn = {"full": full, "stride1": stride1}[kind]
        _JITTED[(id(model), kind, latents)] = (model, jax.jit(fn, compiler_options=FAST_COMPILE))  # model kept alive
    return _JITTED[(id(model), kind, latents)][1]


def full_forward_nll(model, docs, latents_of):
    """{(document, target): nll} of a full forward over the target's last L inputs (left-padded)
    with ``latents_of(i, t)`` latents, for every evaluated target."""
    keys, wins, poss = [], [], []
    for i, d in enumerate(docs):
        ev = np.ones(len(d.tokens) - 1, bool) if d.evaluated is None else d.evaluated
        for t in np.flatnonzero(ev).tolist():
            lo = max(0, t + 1 - L)
            w, p = np.full(L, PAD_ID, np.int32), np.zeros((L, 1), np.int32)
            w[L - (t + 1 - lo) :] = d.tokens[lo : t + 1]
            own = d.positions[lo : t + 1] if d.positions is not None else 1 + np.arange(lo, t + 1)[:, None]
            p[L - (t + 1 - lo) :] = own
            keys.append((i, t))
            wins.append(w)
            poss.append(p)
    ns = tuple(sorted({latents_of(i, t) for i, t in keys}))  # one program with the latent counts needed
    logits = np.asarray(_jitted(model, "full", ns)(nnx.state(model), np.stack(wins), np.stack(poss)))
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))  # [len(ns), S, V]
    return {(i, t): -float(logp[ns.index(latents_of(i, t)), s, docs[i].tokens[t + 1]]) for s, (i, t) in enumerate(keys)}


def stride1_per_target(model, docs):
    """Per-target NLLs of ``stride1`` (its own windows, repro/eval/protocols.py), in target order."""
    state, jitted = nnx.state(model), _jitted(model, "stride1")
    batches = EvalBatches(docs, parse_protocol("stride1", M), L, M, 8)
    out = []
    for b in batches:
        nll, _, mask = (np.asarray(a) for a in jitted(state, {k: b[k] for k in ("inputs", "targets", "positions")}))
        out.extend(nll[mask > 0].tolist())
    return np.array(out), evaluate(lambda p, b: jitted(state, b), None, batches, 8)


def latents(step, fill):
    """Latents in the cache at decoding step ``step`` (0 = the prefill): fill, +1 per step up to
    M, then fill again (a reset) after the step at which the cache was full."""
    return fill + step % (M - fill + 1)


# ----------------------------------------------------------------------------- parsing


def test_parse_cached_protocol():
    assert parse_protocol("cached:3", M) == parse_protocol(" cached:3 ", M)
    p = parse_protocol("cached:3", M)
    assert p.cached and p.fill == 3 and p.name == "cached:3"
    assert parse_protocol("cached", M).name == parse_protocol("cached:0", M).name == f"cached:{M // 2}"
    assert not parse_protocol("stride1", M).cached and not parse_protocol("blocked:2", M).cached
    for bad in (f"cached:{M}", "cached:-1", "cached:x", "cached:", "cachedx"):
        with pytest.raises(ValueError) as e:
            parse_protocol(bad, M)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cached"):
        parse_protocol("cached", 1)
    assert cached.is_cached("cached:4") and cached.is_cached("cached") and not cached.is_cached("blocked:4")
    with pytest.raises(ValueError, match="sampler"):  # the windowed batches never run it silently as stride1
        EvalBatches([doc(6, 0)], parse_protocol("cached:2", M), L, M, 4)


def test_cached_batches_layout():
    """Documents in batches of batch_size (whole documents, right-padded), only evaluated targets
    as targets, documents without one skipped, max_examples, and the split's description."""
    ev = np.zeros(4, bool)
    ev[2:] = True
    docs = [doc(4, 0), doc(5, 1, evaluated=ev), doc(3, 2, evaluated=np.zeros(2, bool)), doc(6, 3), doc(2, 4)]
    docs[3].score_mask = np.arange(5) % 2 == 0
    docs[0].num_words = 3.0
    b = cached.CachedBatches(docs, parse_protocol("cached:3", M), 2, max_examples=4, bits_per_dim=True)
    assert b.info == {"protocol": "cached:3", "documents": 4, "windows": 3, "targets": 3 + 2 + 0 + 5,
                      "num_words": None, "bits_per_dim": True}  # fmt: skip
    batches = list(b)
    assert len(batches) == len(b) == 2
    assert [x["seq_id"].tolist() for x in batches] == [[0, 1], [3]]
    first, second = batches
    assert (
        first["inputs"].shape == (2, 5) and first["targets"].shape == (2, 4) and first["positions"].shape == (2, 5, 1)
    )
    np.testing.assert_array_equal(first["inputs"][0], [*docs[0].tokens, PAD_ID])
    np.testing.assert_array_equal(first["targets"][1], np.where(ev, docs[1].tokens[1:], PAD_ID))
    np.testing.assert_array_equal(first["positions"][0, :, 0], [1, 2, 3, 4, 0])  # 1-based offsets, PAD: 0
    np.testing.assert_array_equal(second["score_mask"][0], docs[3].score_mask)
    assert not first["score_mask"].any()


# ----------------------------------------------------------------------------- the sampler's scoring mode


def test_generate_score_mode_is_the_logits_nll():
    """score=True records the NLL of each forced token (and argmax == token) from the very logits
    return_logits gives, and a forced PAD ends its row."""
    model = tiny()
    rng = np.random.default_rng(0)
    forced = rng.integers(NUM_RESERVED, V, (2, 12)).astype(np.int32)
    forced[1, 5:] = PAD_ID
    prompts = [np.array([SOS_ID]), np.array([SOS_ID, 5, 6])]
    out = generate(model, prompts, 12, SampleConfig(temperature=0, reset_fill=3), forced=forced, return_logits=True,
                   score=True, compiler_options=FAST_COMPILE)  # fmt: skip
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(out.logits), axis=-1))
    want = -np.take_along_axis(logp, forced[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(out.target_nll[0], want[0], atol=1e-5)
    np.testing.assert_allclose(out.target_nll[1, :5], want[1, :5], atol=1e-5)
    np.testing.assert_array_equal(out.target_correct, out.logits.argmax(-1) == forced)
    assert (out.generated[1][5:] == PAD_ID).all() and out.stopped.tolist() == [False, True]
    with pytest.raises(ValueError, match="forced"):
        generate(model, prompts, 2, score=True)


# ----------------------------------------------------------------------------- equalities


def test_no_reset_equals_stride1(model):
    """With initial fill F the first reset comes after M - F decoded tokens: documents of at most
    M - F + 1 targets (scored from SOS, or from a target f with f + 1 <= F) are decoded without
    one, every target sees a latent on each of its inputs, and so does stride1's (at most M
    inputs): equal per target, and the same metrics."""
    pfd = model.cfg.positions_from_data
    F = 2
    evaluated = np.ones(6, bool)
    evaluated[[0, 5]] = False  # first evaluated target 1 (prompt SOS + 1 token <= F), EOS not evaluated
    r = M - F + 1  # the first reset's step
    docs = [doc(n, n, from_data=pfd) for n in (2, 4, r + 1, 5)] + [doc(7, 9, evaluated=evaluated, from_data=pfd)]
    assert max(len(d.tokens) - 1 for d in docs) == r
    # One batch (one compiled loop): the documents above, and one with a target more, whose step
    # r is a reset to F latents on its r + 1 inputs.
    long = doc(r + 2, 3, from_data=pfd)
    got, _ = cached_per_target(model, [*docs, long], F, batch_size=6)
    want, _ = stride1_per_target(model, [*docs, long])
    keys = sorted(got)
    assert len(keys) == len(want) == 1 + 3 + r + 4 + 4 + (r + 1)
    last = keys.index((len(docs), r))
    np.testing.assert_allclose([got[k][0] for k in keys if k != keys[last]], np.delete(want, last), atol=ATOL)
    # That target alone differs from stride1, and equals a full forward with F latents.
    ref = full_forward_nll(model, [long], lambda i, t: F)
    assert (
        got[(len(docs), r)][0] == pytest.approx(ref[(0, r)], abs=ATOL) and abs(got[keys[last]][0] - want[last]) > 1e-3
    )
    # Without it, the same metrics as stride1's (evaluate() over the cached step's per-target losses).
    _, metrics = cached_per_target(model, docs, F, batch_size=6)
    _, smetrics = stride1_per_target(model, docs)
    for k in ("eval_tokens", "eval_documents"):
        assert metrics[k] == smetrics[k], k
    for k in ("nats_per_token", "total_nll_nats", "token_accuracy"):
        assert metrics[k] == pytest.approx(smetrics[k], abs=1e-4), k
    assert metrics["protocol"] == "cached:2" and smetrics["protocol"] == "stride1"


def test_across_resets_equals_full_forwards(model):
    """Across resets every target equals a full forward over its inputs with as many latents as
    the cache holds (fill at the prefill and after each reset, one more per decoded token) while
    the document fits in L inputs; past L, at the reset steps (which recompute everything). The
    batch mixes lengths and a prompt (an evaluated second half, as the copy task's)."""
    pfd = model.cfg.positions_from_data
    F = 3
    half = np.zeros(21, bool)
    half[10:] = True  # targets 10..20: the prompt is tokens 0..10, prefilled with F latents
    docs = [doc(L + 1, 1, from_data=pfd), doc(15, 2, from_data=pfd), doc(22, 3, evaluated=half, from_data=pfd),
            doc(40, 4, from_data=pfd), doc(9, 5, from_data=pfd)]  # fmt: skip
    first = {i: (0 if d.evaluated is None else int(np.flatnonzero(d.evaluated)[0])) for i, d in enumerate(docs)}
    got, metrics = cached_per_target(model, docs, F, batch_size=6)  # one batch, and one padding row
    ref = full_forward_nll(model, docs, lambda i, t: latents(t - first[i], F))
    checked = resets = 0
    for (i, t), (nll, _) in sorted(got.items()):
        s = t - first[i]
        is_reset = s > 0 and latents(s, F) == F
        if t + 1 <= L or is_reset:
            assert nll == pytest.approx(ref[(i, t)], abs=ATOL), (i, t, s)
            checked += 1
            resets += is_reset and t + 1 > L
    assert checked > 60 and resets >= 2
    assert metrics["eval_tokens"] == sum(len(d.tokens) - 1 for d in docs) - 10
    # The cache is not a stride1 evaluation across resets (fewer latents): it differs.
    want, _ = stride1_per_target(model, docs)
    assert not np.allclose([got[k][0] for k in sorted(got)], want, atol=1e-3)


def test_long_documents_in_spans(model):
    """A document scored in spans of ``span`` evaluated targets: each span is one row, primed by
    the whole document before it (only its last L inputs are passed), starting at a prefill; so
    target t of a span that starts at target f sees latents(t - f) latents, and equals a full
    forward with that many while it fits in L inputs, at the span's prefill and at every reset.
    Every target is scored once, and the numbers do not depend on the batch size."""
    pfd = model.cfg.positions_from_data
    F, span = 3, 7
    half = np.zeros(45, bool)
    half[12:] = True
    docs = [doc(50, 6, from_data=pfd), doc(46, 7, evaluated=half, from_data=pfd), doc(5, 8, from_data=pfd)]
    got, metrics = cached_per_target(model, docs, F, batch_size=4, span=span)
    start = {}
    for i, d in enumerate(docs):
        idx = np.flatnonzero(np.ones(len(d.tokens) - 1, bool) if d.evaluated is None else d.evaluated)
        for k in range(0, len(idx), span):
            start.update({(i, int(t)): int(idx[k]) for t in idx[k : k + span]})
    assert sorted(got) == sorted((i, t) for i, d in enumerate(docs) for t in range(len(d.tokens) - 1)
                                 if d.evaluated is None or d.evaluated[t])  # fmt: skip
    ref = full_forward_nll(model, docs, lambda i, t: latents(t - start[(i, t)], F))
    checked = past_L = 0
    for (i, t), (nll, _) in sorted(got.items()):
        s = t - start[(i, t)]
        if t + 1 <= L or latents(s, F) == F:  # fits, or a prefill / reset
            assert nll == pytest.approx(ref[(i, t)], abs=ATOL), (i, t, s)
            checked += 1
            past_L += t + 1 > L
    assert checked > 40 and past_L >= 5
    assert batches_info(docs, span)["windows"] == 7 + 5 + 1  # ceil(49 / 7), ceil(33 / 7), 1
    other, metrics2 = cached_per_target(model, docs, F, batch_size=3, span=span)
    np.testing.assert_allclose([other[k][0] for k in sorted(got)], [got[k][0] for k in sorted(got)], atol=ATOL)
    assert metrics2["eval_tokens"] == metrics["eval_tokens"] == 49 + 33 + 4


def batches_info(docs, span):
    return cached.CachedBatches(docs, parse_protocol("cached:3", M), 4, span=span).info


def test_refuses_models_without_a_cache():
    """Implicit absolute positions: the sampler would recompute every step (= stride1): refused."""
    model = tiny("sinusoidal")
    graphdef, _ = nnx.split(model)
    with pytest.raises(ValueError, match="implicit sinusoidal positions") as e:
        cached.setup(model.cfg, graphdef, [doc(5, 0)], "cached:2", 2)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    from experiments import SECTIONS
    from repro import app

    sec = SECTIONS["copy"]
    exp = sec.presets["smoke"]
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, steps=2, eval_every=2, checkpoint_every=2))
    root = tmp_path_factory.mktemp("copy")
    app.run(sec, exp, root / "run", data_dir=root / "data", show_progress=False)
    return sec, root / "run", root / "data"


def test_evaluate_run_cached_on_copy_smoke(copy_run):
    """``repro eval copy --protocol cached:4`` through repro.app.evaluate_run: a row with the same
    keys as the blocked:M row, the same scored targets and documents, its own file."""
    from repro import app
    from repro.results import read_row

    sec, wd, data_dir = copy_run
    kw = dict(data_dir=data_dir, show_progress=False, max_examples=5)
    blocked, _ = app.evaluate_run(sec, wd, protocol="blocked:16", **kw)
    row, path = app.evaluate_run(sec, wd, protocol="cached:4", **kw)
    assert path.name == "validation_cached_4.json" and read_row(path)["protocol"] == "cached:4"
    assert row["metrics"]["protocol"] == "cached:4" and row["kind"] == "eval"
    assert set(row) == set(blocked) and set(row["metrics"]) == set(blocked["metrics"])
    for k in ("eval_tokens", "eval_documents", "scored_tokens", "eval_sequences"):
        assert row["metrics"][k] == blocked["metrics"][k], k
    assert np.isfinite(row["metrics"]["nats_per_token"]) and row["metrics"]["nats_per_token_stderr"] > 0
    json.dumps(row, default=str)
    for bad, msg in (("cached:16", "reset fill"), ("cached:x", "integer"), ("cachd:2", "unknown")):
        with pytest.raises(app.UserError, match=msg):
            app.evaluate_run(sec, wd, protocol=bad, **kw)
