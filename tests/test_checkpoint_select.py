"""`repro eval` / `repro sample` --checkpoint latest|best|STEP (repro.app.load_run): a smoke run
of the test suite's toy section (tests/toy_section.py: word perplexity, lower is better) whose
learning rate ramps up to a diverging value, so its best evaluated checkpoint (step 10) is not its
latest (step 30), and both are kept (train.keep_checkpoints=1 + the best one). Then the best
checkpoint's rule (repro.checkpoint.BestBy): by the section's headline in its direction, eval
nats/token for a lower-is-better headline."""

import json
import math
import shutil

import jax.numpy as jnp
import pytest
import toy_section as toy
from conftest import one_error_line

from repro import app
from repro.checkpoint import BEST_METRIC, BestBy, Checkpointer
from repro.config import apply_overrides
from repro.results import read_row
from repro.section import Metric

TOY = toy.SECTION


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("best")
    wd, data_dir = root / "run", root / "data"
    exp = apply_overrides(TOY.presets["smoke"], [
        "train.steps=30", "train.eval_every=10", "train.checkpoint_every=10", "train.keep_checkpoints=1",
        "train.keep_best_checkpoints=1", "optim.lr=3.0", "optim.warmup_steps=30",
    ])  # fmt: skip
    row = app.run(TOY, exp, wd, data_dir=data_dir, show_progress=False)
    return wd, row, data_dir


def _evals(wd):
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["eval/nats_per_token"] for r in rows if "eval/nats_per_token" in r}


def test_best_and_latest_are_different_kept_checkpoints(best_run):
    wd, row, _ = best_run
    scores = _evals(wd)
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [10, 30]
    assert min(scores, key=scores.get) == 10 == row["best_checkpoint_step"] and row["steps"] == 30


def test_eval_best_scores_the_best_step_and_does_not_replace_the_latest_row(best_run):
    wd, _, data_dir = best_run
    latest, p_latest = app.evaluate_run(TOY, wd, show_progress=False, data_dir=data_dir)
    best, p_best = app.evaluate_run(TOY, wd, checkpoint="best", show_progress=False, data_dir=data_dir)
    by_step, p_step = app.evaluate_run(TOY, wd, checkpoint="10", show_progress=False, data_dir=data_dir)
    assert (latest["steps"], latest["checkpoint"]) == (30, "latest") and p_latest.name == "validation_blocked_8.json"
    assert (best["steps"], best["checkpoint"]) == (10, "best") and p_best.name == "validation_blocked_8_step10.json"
    assert (by_step["steps"], by_step["checkpoint"]) == (10, "10") and p_step == p_best
    assert read_row(p_latest)["steps"] == 30 and read_row(p_best)["steps"] == 10  # both on disk
    scores = _evals(wd)
    # The same evaluation as training's (its eval_examples, the default protocol).
    assert best["metrics"]["nats_per_token"] == pytest.approx(scores[10], rel=1e-5)
    assert latest["metrics"]["nats_per_token"] == pytest.approx(scores[30], rel=1e-5)
    assert by_step["metrics"] == best["metrics"]


def test_sample_from_the_best_checkpoint(best_run):
    wd, _, data_dir = best_run
    summary, outdir = app.sample_run(TOY, wd, num=1, checkpoint="best", data_dir=data_dir)
    assert outdir == wd / "samples" / "step10" and (outdir / "toy.json").is_file()
    settings = json.loads((outdir / "toy.json").read_text())["settings"]
    assert summary == {"samples": 1} and settings["checkpoint_step"] == 10 and settings["checkpoint"] == "best"


@pytest.mark.parametrize(
    "cmd, value, message",
    [
        ("eval", "20", "keeps no checkpoint at that step (kept steps: 10, 30)"),
        ("sample", "20", "keeps no checkpoint at that step (kept steps: 10, 30)"),
        ("eval", "worst", "--checkpoint must be latest, best or a step number"),
        ("eval", "0", "--checkpoint must be latest, best or a step number"),
        ("sample", "-3", "--checkpoint must be latest, best or a step number"),
    ],
)
def test_a_checkpoint_that_is_not_kept_is_one_line(cli_inproc, best_run, cmd, value, message):
    wd, _, data_dir = best_run
    code, _, err = cli_inproc(cmd, "toy", "--workdir", str(wd), "--checkpoint", value, "--data-dir", str(data_dir))
    assert one_error_line(code, err) and message in err, err


def test_best_without_any_eval_score_is_one_line(cli_inproc, best_run, tmp_path):
    wd, _, data_dir = best_run
    w2 = tmp_path / "run"
    shutil.copytree(wd, w2)
    for m in (w2 / "checkpoints").glob("*/metrics"):  # as checkpoints saved between evaluations
        shutil.rmtree(m)
    args = ("--workdir", str(w2), "--no-progress", "--data-dir", str(data_dir))
    code, _, err = cli_inproc("eval", "toy", *args, "--checkpoint", "best")
    assert one_error_line(code, err) and "has an eval score (kept steps: 10, 30)" in err, err
    code, out, err = cli_inproc("eval", "toy", *args, "--checkpoint", "30")
    assert code == 0 and "checkpoint 30 (step 30)" in out, err


ACCURACY = Metric("scored_token_accuracy", "accuracy", "fraction", ".2%", higher_is_better=True)


def test_best_by_follows_the_headline_direction():
    nats_only = BestBy.headline(TOY.headline)
    assert nats_only == BestBy() and not nats_only.higher_is_better  # lower is better: eval nats/token
    ev = {"nats_per_token": 2.0, "scored_token_accuracy": 0.25, "word_perplexity": 9.0}
    assert nats_only.metrics(ev) == {BEST_METRIC: 2.0}  # what checkpoints have always recorded
    assert nats_only.rank({BEST_METRIC: 1.0}) < nats_only.rank({BEST_METRIC: 2.0})
    acc = BestBy.headline(ACCURACY)
    assert acc.metrics(ev) == {BEST_METRIC: 2.0, "eval_scored_token_accuracy": 0.25}
    assert acc.metrics({"nats_per_token": 2.0, "scored_token_accuracy": math.nan}) == {BEST_METRIC: 2.0}
    better, worse = acc.metrics({**ev, "scored_token_accuracy": 0.5}), acc.metrics({**ev, "nats_per_token": 1.0})
    assert acc.rank(better) < acc.rank(worse)  # higher accuracy wins over lower nats/token
    assert acc.rank({BEST_METRIC: 1.0, "eval_scored_token_accuracy": 1.0}) < acc.rank(
        {BEST_METRIC: 1.5, "eval_scored_token_accuracy": 1.0})  # a tie in accuracy: lower nats/token  # fmt: skip
    assert acc.rank(worse) < acc.rank({BEST_METRIC: 0.1})  # recorded without accuracy (earlier code): last


@pytest.mark.parametrize("headline, best", [(TOY.headline, 2), (ACCURACY, 3)])
def test_kept_and_best_checkpoints_follow_the_headline(tmp_path, headline, best):
    """Step 2 has the lowest nats/token, step 3 the highest accuracy: the best checkpoint (kept
    beside the 2 latest, and what --checkpoint best restores) is the headline's."""
    rule = BestBy.headline(headline)
    ck = Checkpointer(tmp_path, keep=2, keep_best=1, best=rule)
    evals = {1: (3.0, 0.1), 2: (1.0, 0.2), 3: (2.0, 0.6), 4: None, 5: (2.5, 0.3), 6: None}
    for step, ev in evals.items():
        metrics = None if ev is None else rule.metrics({"nats_per_token": ev[0], "scored_token_accuracy": ev[1]})
        ck.save(step, {"w": jnp.arange(3.0)}, metrics=metrics)
    assert ck.all_steps() == sorted({best, 5, 6}) and ck.best_step() == best
    ck.close()
    reader = Checkpointer(tmp_path, read_only=True, best=rule)  # repro eval / sample --checkpoint best
    assert reader.best_step() == best
    reader.close()
