"""Named evaluation protocols over whole documents (repro/eval/protocols.py).

Tiny models (L = 12 inputs, M = 4 latents, d = 16, one layer), one jitted eval step per model.
"""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from repro.config import ModelConfig
from repro.data.tokens import EOS_ID, PAD_ID, SOS_ID
from repro.data.windows import cut_windows
from repro.eval.evaluate import evaluate
from repro.eval.protocols import Document, EvalBatches, as_documents, parse_protocol, window_ends
from repro.model import PerceiverAR
from repro.train.step import token_losses

V, L, M = 16, 12, 4
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def docs_of(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [np.concatenate([[SOS_ID], rng.integers(3, V, n - 2), [EOS_ID]]).astype(np.int32) for n in lengths]


def make_step(position_encoding: str, from_data: bool):
    cfg = ModelConfig(
        vocab_size=V, max_context=L, num_latents=M, d_model=16, num_layers=1, cross_heads=2, self_heads=2,
        dropout=0.0, final_init_zeros=False, position_encoding=position_encoding, positions_from_data=from_data,
        position_table_sizes=(64,) if from_data else (),  # 1-based offsets of documents up to 63 tokens
    )  # fmt: skip
    graphdef, state = nnx.split(PerceiverAR(cfg, rngs=nnx.Rngs(0)))

    def step(state, batch):
        logits = nnx.merge(graphdef, state)(batch["inputs"], batch["positions"] if from_data else None)
        _, nll, correct, mask = token_losses(logits, batch["targets"], z_loss=0.0, label_smoothing=0.0)
        return nll, correct, mask

    jitted = jax.jit(step, compiler_options=FAST_COMPILE)
    return lambda params, batch: jitted(state, batch)


MODELS = {"rotary": ("rotary", False), "learned-data": ("learned", True)}


@pytest.fixture(scope="module", params=list(MODELS))
def step(request):
    return make_step(*MODELS[request.param])


def run(step, docs, protocol, rows=8, **kw):
    """Metrics of ``docs``: ``rows`` windows per batch, padded with all-PAD rows to a compiled batch of 8."""
    return evaluate(step, None, EvalBatches(docs, parse_protocol(protocol, M), L, M, rows, **kw), 8)


def same_metrics(a, b, exact=True):
    keys = ("nats_per_token", "eval_tokens", "token_accuracy", "total_nll_nats")
    for k in keys:
        if exact:
            assert a[k] == b[k], (k, a[k], b[k])
        else:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6), (k, a[k], b[k])


# ----------------------------------------------------------------------------- window layout


def test_parse_protocol():
    assert parse_protocol("stride1", M) == parse_protocol("stride1", M)
    assert parse_protocol("blocked:3", M).block == 3
    assert parse_protocol("blocked:M", M).name == f"blocked:{M}"
    for bad in ("blocked:0", f"blocked:{M + 1}", "blocked:x", "strided", ""):
        with pytest.raises(ValueError):
            parse_protocol(bad, M)


@pytest.mark.parametrize("block", [1, 2, 3, 4])
def test_every_evaluated_target_is_scored_exactly_once(block):
    docs = [Document(d) for d in docs_of([2, 3, 5, 9, 13, 30])]
    # A document evaluating only a middle span with a gap (as the copy task evaluates its 2nd half).
    ev = np.zeros(29, bool)
    ev[[3, 4, 5, 17, 18, 28]] = True
    docs.append(Document(docs_of([30], seed=1)[0], evaluated=ev))
    seen = {}
    for b in EvalBatches(docs, parse_protocol(f"blocked:{block}", M), L, M, batch_size=5):
        for r in range(len(b["inputs"])):
            for j in np.flatnonzero(b["targets"][r] != PAD_ID):
                seen.setdefault(int(b["seq_id"][r]), []).append(int(b["targets"][r, j]))
    for i, d in enumerate(docs):
        ev = np.ones(len(d.tokens) - 1, bool) if d.evaluated is None else d.evaluated
        assert sorted(seen[i]) == sorted(d.tokens[1:][ev].tolist()), (i, block)


def test_windows_match_cut_windows_on_the_whole_document():
    """Windows are cut from local slices (never whole long documents) but are the same windows,
    with 1-based positions counted from the document start."""
    d = docs_of([40])[0]
    batches = list(EvalBatches([Document(d)], parse_protocol("blocked:3", M), L, M, batch_size=64))
    ends = window_ends(Document(d), 3)
    ref = cut_windows(d[None].repeat(len(ends), 0), ends, L, M)
    (b,) = batches
    np.testing.assert_array_equal(b["inputs"], ref["inputs"])
    np.testing.assert_array_equal(b["positions"], ref["positions"])
    keep = np.arange(M) >= M - 3
    np.testing.assert_array_equal(b["targets"], np.where(keep, ref["targets"], PAD_ID))
    assert ends[-1] == len(d) - 1 and np.all(np.diff(ends) == 3)


def test_positions_from_the_data_are_cut_with_their_inputs():
    d = docs_of([20])[0]
    pos = np.stack([np.arange(20) % 4, np.arange(20) // 4, np.arange(20) % 3], -1) + 1  # (x, y, channel)
    (b,) = EvalBatches([Document(d, positions=pos)], parse_protocol("stride1", M), L, M, 32)
    for r, e in enumerate(window_ends(Document(d), 1)):
        lo = max(0, e - L)
        np.testing.assert_array_equal(b["positions"][r, L - (e - lo) :], pos[lo:e])
        assert (b["positions"][r, : L - (e - lo)] == 0).all()


def test_padding_at_the_ends_of_documents_is_stripped():
    d = docs_of([7])[0]
    padded = Document(np.concatenate([[PAD_ID] * 2, d, [PAD_ID] * 5]))
    np.testing.assert_array_equal(padded.tokens, d)
    as_2d = np.zeros((2, 12), np.int32)
    as_2d[0, :7], as_2d[1, :5] = d, d[:5]
    docs = as_documents(as_2d)
    assert [len(x.tokens) for x in docs] == [7, 5]


def test_max_examples_and_info():
    docs = [Document(d, num_words=3) for d in docs_of([5, 6, 7])]
    b = EvalBatches(docs, parse_protocol("blocked:2", M), L, M, 4, max_examples=2)
    assert b.info["documents"] == 2 and b.info["num_words"] == 6 and b.protocol == "blocked:2"
    assert {int(i) for x in b for i in x["seq_id"]} == {0, 1}


def test_copy_task_default_protocol_is_named():
    from experiments import SECTIONS

    sec = SECTIONS["copy"]
    exp = sec.presets["smoke"]  # length 32, 16 latents
    ds = sec.make_dataset(exp)
    b = ds.eval_batches("validation", 3, 4, sec.default_protocol(exp))
    assert b.protocol == "blocked:16" and b.info["windows"] == 3
    assert ds.eval_batches("validation", 3, 4, "stride1").info["windows"] == 3 * 16  # mirrored half + EOS


# ----------------------------------------------------------------------------- metrics under a model


def test_stride1_equals_blocked1(step):
    docs = [Document(d) for d in docs_of([2, 6, 11, 25])]
    a, b = run(step, docs, "stride1"), run(step, docs, "blocked:1")
    assert a["protocol"] == "stride1" and b["protocol"] == "blocked:1"
    same_metrics(a, b)


@pytest.mark.parametrize("block", [2, M])
def test_blocked_equals_stride1_with_full_context(step, block):
    """Documents with at most M inputs: every target sees all earlier inputs and latents under
    both protocols."""
    docs = [Document(d) for d in docs_of([2, 3, 4, M + 1, M + 1], seed=2)]
    same_metrics(run(step, docs, f"blocked:{block}"), run(step, docs, "stride1"), exact=False)


def test_blocked_differs_from_stride1_with_partial_latent_context(step):
    """... and longer documents give (by design) different numbers: fewer preceding latents."""
    docs = [Document(d) for d in docs_of([20, 25], seed=3)]
    a, b = run(step, docs, f"blocked:{M}"), run(step, docs, "stride1")
    assert a["eval_tokens"] == b["eval_tokens"] and a["nats_per_token"] != pytest.approx(b["nats_per_token"])


def test_padding_changes_nothing(step):
    """PAD around documents, and all-PAD filler rows from a larger batch, change no metric."""
    raw = docs_of([3, 9, 17], seed=4)
    plain = [Document(d) for d in raw]
    padded = [Document(np.pad(d, (3, 6))) for d in raw]
    for protocol in ("stride1", "blocked:3"):
        a = run(step, plain, protocol, rows=8)
        same_metrics(a, run(step, padded, protocol, rows=8))
        same_metrics(a, run(step, plain, protocol, rows=3), exact=False)


def test_word_level_perplexity_uses_the_split_word_count(step):
    docs = [Document(d, num_words=w) for d, w in zip(docs_of([6, 9], seed=5), [2, 3], strict=True)]
    out = run(step, docs, "blocked:2")
    assert out["eval_words"] == 5
    assert out["word_perplexity"] == pytest.approx(np.exp(out["total_nll_nats"] / 5))


def test_evaluated_mask_restricts_scoring(step):
    d = docs_of([16], seed=6)[0]
    ev = np.zeros(15, bool)
    ev[8:] = True
    a = run(step, [Document(d, evaluated=ev)], "stride1")
    b = run(step, [Document(d)], "stride1")
    assert a["eval_tokens"] == 7 and b["eval_tokens"] == 15


def test_stride1_shared_head_equals_one_window_per_target(step):
    """The exact shortcut (one head window for the first M targets of a document) gives the
    plain definition's numbers, per target, on documents shorter than, as long as and longer than
    M and L, and with an evaluated span that starts inside and after the head; it runs
    T - min(M, T) + 1 windows on a document of T targets."""
    ev = np.zeros(19, bool)
    ev[[2, 3, 9, 15]] = True
    late = np.zeros(19, bool)
    late[M + 2 :] = True
    raw = docs_of([2, 3, M + 1, M + 2, 9, 2 * L], seed=7)
    docs = [Document(d) for d in raw] + [Document(docs_of([20], seed=8)[0], evaluated=m) for m in (ev, late)]
    plain = EvalBatches(docs, parse_protocol("stride1", M), L, M, 5)
    shared = EvalBatches(docs, parse_protocol("stride1", M), L, M, 5, share_head=True)
    targets = [len(d) - 1 for d in raw]
    assert plain.info["windows"] == sum(targets) + 4 + len(late[late])
    # ev: targets 2, 3 share the head window, 9 and 15 have one each; late: no head at all.
    assert shared.info["windows"] == sum(t - min(M, t) + 1 for t in targets) + 3 + len(late[late])
    assert shared.info["targets"] == plain.info["targets"] == sum(targets) + 4 + len(late[late])

    def per_target(batches):
        out = {}
        for b in batches:
            nll, _, mask = (np.asarray(a) for a in step(None, {k: b[k] for k in ("inputs", "targets", "positions")}))
            for r, j in zip(*np.nonzero(mask), strict=True):  # the NLLs of each document's targets
                out.setdefault(int(b["seq_id"][r]), []).append(float(nll[r, j]))
        return {k: sorted(v) for k, v in out.items()}

    a, b = per_target(plain), per_target(shared)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
    same_metrics(evaluate(step, None, shared, 5), evaluate(step, None, plain, 5), exact=False)


def test_shared_head_only_where_positions_do_not_move():
    """The pipeline turns the shortcut on for rotary / relative and data positions, off for
    implicit absolute positions (which count from the window's end)."""
    from experiments import SECTIONS

    sec = SECTIONS["copy"]
    smoke = sec.presets["smoke"]  # sinusoidal positions from the data
    assert sec.make_dataset(smoke).share_head
    implicit = dataclasses.replace(smoke, model=dataclasses.replace(smoke.model, positions_from_data=False))
    assert not sec.make_dataset(implicit).share_head
