"""`repro eval` / `repro sample` --checkpoint latest|best|STEP (repro.app.load_run): a copy smoke
run whose learning rate ramps up to a diverging value, so its best evaluated checkpoint (step 10)
is not its latest (step 30), and both are kept (train.keep_checkpoints=1 + the best one)."""

import json
import shutil

import pytest

from experiments import SECTIONS
from repro import app
from repro.config import apply_overrides
from repro.results import read_row

COPY = SECTIONS["copy"]


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("best") / "run"
    exp = apply_overrides(COPY.presets["smoke"], [
        "train.steps=30", "train.eval_every=10", "train.keep_checkpoints=1", "train.keep_best_checkpoints=1",
        "optim.lr=3.0", "optim.warmup_steps=30",
    ])  # fmt: skip
    row = app.run(COPY, exp, wd, show_progress=False)
    return wd, row


def _evals(wd):
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["eval/nats_per_token"] for r in rows if "eval/nats_per_token" in r}


def test_best_and_latest_are_different_kept_checkpoints(best_run):
    wd, row = best_run
    scores = _evals(wd)
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [10, 30]
    assert min(scores, key=scores.get) == 10 == row["best_checkpoint_step"] and row["steps"] == 30


def test_eval_best_scores_the_best_step_and_does_not_replace_the_latest_row(best_run):
    wd, _ = best_run
    latest, p_latest = app.evaluate_run(COPY, wd, show_progress=False)
    best, p_best = app.evaluate_run(COPY, wd, checkpoint="best", show_progress=False)
    by_step, p_step = app.evaluate_run(COPY, wd, checkpoint="10", show_progress=False)
    assert (latest["steps"], latest["checkpoint"]) == (30, "latest") and p_latest.name == "validation_blocked_16.json"
    assert (best["steps"], best["checkpoint"]) == (10, "best") and p_best.name == "validation_blocked_16_step10.json"
    assert (by_step["steps"], by_step["checkpoint"]) == (10, "10") and p_step == p_best
    assert read_row(p_latest)["steps"] == 30 and read_row(p_best)["steps"] == 10  # both on disk
    scores = _evals(wd)
    # The same evaluation as training's (copy: its eval_examples, the default protocol).
    assert best["metrics"]["nats_per_token"] == pytest.approx(scores[10], rel=1e-5)
    assert latest["metrics"]["nats_per_token"] == pytest.approx(scores[30], rel=1e-5)
    assert by_step["metrics"] == best["metrics"]


def test_sample_from_the_best_checkpoint(best_run):
    wd, _ = best_run
    summary, outdir = app.sample_run(COPY, wd, num=1, checkpoint="best")
    assert outdir == wd / "samples" / "step10" and (outdir / "copy.json").is_file()
    assert summary["settings"]["checkpoint_step"] == 10 and summary["settings"]["checkpoint"] == "best"


def _one_line(code, err):
    return code == 2 and len([x for x in err.splitlines() if x.strip()]) == 1 and "Traceback" not in err


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
    wd, _ = best_run
    code, _, err = cli_inproc(cmd, "copy", "--workdir", str(wd), "--checkpoint", value)
    assert _one_line(code, err) and message in err, err


def test_best_without_any_eval_score_is_one_line(cli_inproc, best_run, tmp_path):
    wd, _ = best_run
    w2 = tmp_path / "run"
    shutil.copytree(wd, w2)
    for m in (w2 / "checkpoints").glob("*/metrics"):  # as checkpoints saved between evaluations
        shutil.rmtree(m)
    code, _, err = cli_inproc("eval", "copy", "--workdir", str(w2), "--checkpoint", "best", "--no-progress")
    assert _one_line(code, err) and "has an eval score (kept steps: 10, 30)" in err, err
    code, out, err = cli_inproc("eval", "copy", "--workdir", str(w2), "--checkpoint", "30", "--no-progress")
    assert code == 0 and "checkpoint 30 (step 30)" in out, err
