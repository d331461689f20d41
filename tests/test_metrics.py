"""Metric conversions against hand-computed values (repro/eval/metrics.py) and the evaluation loop's
padding / reserved-token handling (repro/eval/evaluate.py)."""

import math

import numpy as np
import pytest

from repro.data.tokens import EOS_ID, PAD_ID
from repro.eval.evaluate import evaluate
from repro.eval.metrics import (
    LN2,
    NLLSums,
    mean_and_stderr,
    nats_to_bits,
    perplexity,
    word_perplexity,
)


def test_bits_and_nats():
    assert LN2 == pytest.approx(0.6931471805599453)
    assert nats_to_bits(math.log(2)) == pytest.approx(1.0)
    assert nats_to_bits(math.log(256)) == pytest.approx(8.0)  # a uniform byte is 8 bits


def test_mean_and_stderr_by_hand():
    # values 1, 2, 3, 4: mean 2.5, population variance 1.25, stderr sqrt(1.25 / 4)
    m, se = mean_and_stderr(10.0, 30.0, 4)
    assert m == 2.5 and se == pytest.approx(math.sqrt(1.25 / 4))
    assert math.isnan(mean_and_stderr(0.0, 0.0, 0)[0])
    assert math.isnan(mean_and_stderr(3.0, 9.0, 1)[1])  # one value: no error estimate


def test_perplexity_delta_method():
    p, se = perplexity(math.log(20.0), 0.01)
    assert p == pytest.approx(20.0) and se == pytest.approx(0.2)  # exp(m) * se(m)


def test_word_perplexity_by_hand():
    # 6 tokens with total NLL 12 nats over 4 words: exp(12 / 4) = e^3.
    p, se = word_perplexity(12.0, 4, n_tokens=6, token_stderr=0.1)
    assert p == pytest.approx(math.exp(3.0))
    # se(total / W) = n * se(m) / W = 6 * 0.1 / 4 = 0.15; delta method: e^3 * 0.15
    assert se == pytest.approx(math.exp(3.0) * 0.15)


def test_nll_sums_summary_by_hand():
    s = NLLSums()
    # weights: the 0-weight entries (padding) must not count, whatever their NLL.
    s.add(np.array([[1.0, 2.0, 99.0]]), np.array([[1, 1, 0]]))
    s.add(np.array([3.0, 4.0]), np.array([1, 1]))
    out = s.summary(num_words=2, bits_per_dim=True)
    assert out["eval_tokens"] == 4 and out["total_nll_nats"] == 10.0
    assert out["nats_per_token"] == 2.5
    se = math.sqrt(1.25 / 4)
    assert out["nats_per_token_stderr"] == pytest.approx(se)
    assert out["bits_per_token"] == pytest.approx(2.5 / math.log(2))
    assert out["bits_per_token_stderr"] == pytest.approx(se / math.log(2))
    assert out["bits_per_dim"] == pytest.approx(2.5 / math.log(2))
    assert out["perplexity"] == pytest.approx(math.exp(2.5))
    assert out["perplexity_stderr"] == pytest.approx(math.exp(2.5) * se)
    assert out["word_perplexity"] == pytest.approx(math.exp(10.0 / 2))
    assert out["word_perplexity_stderr"] == pytest.approx(math.exp(5.0) * se * 4 / 2)


def test_bits_per_dim_of_uniform_subpixels():
    """A model uniform over 256 values scores exactly 8 bits/dim."""
    s = NLLSums()
    s.add(np.full(12, math.log(256)), np.ones(12))
    out = s.summary(bits_per_dim=True)
    assert out["bits_per_dim"] == pytest.approx(8.0) and out["nats_per_token_stderr"] == pytest.approx(0.0, abs=1e-6)


def _fake_step(nll_of_target):
    """An eval step whose NLL depends only on the target (as token_losses: PAD targets -> 0)."""

    def step(params, batch):
        t = batch["targets"]
        mask = (t != PAD_ID).astype(np.float64)
        return nll_of_target(t) * mask, (t % 2 == 0) * mask, mask

    return step


def test_evaluate_counts_padding_once_and_scores_eos():
    """PAD targets (and all-PAD filler rows of the last batch) add nothing; EOS is a target."""
    targets = np.array([[PAD_ID, 4, 5, EOS_ID], [PAD_ID, PAD_ID, 6, EOS_ID], [7, 8, 9, EOS_ID]], np.int32)
    batch = {"inputs": targets, "targets": targets, "positions": targets[..., None]}
    step = _fake_step(lambda t: t.astype(np.float64))
    a = evaluate(step, None, [batch], batch_size=3, info={})
    b = evaluate(step, None, [batch], batch_size=8, info={})  # 5 filler rows
    scored = targets[targets != PAD_ID].astype(np.float64)
    assert a["eval_tokens"] == b["eval_tokens"] == len(scored) == 9
    assert a["nats_per_token"] == b["nats_per_token"] == pytest.approx(scored.mean())
    assert a["token_accuracy"] == pytest.approx(np.mean(scored % 2 == 0))


def test_evaluate_word_perplexity_and_protocol_from_info():
    info = {"protocol": "blocked:2", "num_words": 3.0, "documents": 1, "bits_per_dim": False}
    t = np.array([[4, 5, 6, EOS_ID]], np.int32)
    step = _fake_step(lambda t: np.full(t.shape, 0.5))
    with pytest.raises(TypeError, match="info"):  # plain batches never silently lose the word count
        evaluate(step, None, [{"inputs": t, "targets": t}], 1)
    out = evaluate(step, None, [{"inputs": t, "targets": t}], 1, info=info)
    assert out["protocol"] == "blocked:2" and out["eval_documents"] == 1
    assert out["word_perplexity"] == pytest.approx(math.exp(4 * 0.5 / 3))
    assert out["perplexity"] == pytest.approx(math.exp(0.5))
