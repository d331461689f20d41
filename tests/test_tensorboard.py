"""TensorBoard event files of a run (repro/train/tboard.py), read back with TensorBoard's own
EventAccumulator: the expected tags and steps, also after a crash and a resume (no step twice, no
step out of order, the resumed session's values); off with train.tensorboard=false; a run
directory whose config.json predates train.tensorboard still resumes; sample PNGs as images."""

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
import toy_section as toy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments import SECTIONS
from repro import app
from repro.config import apply_overrides, experiment_to_dict
from repro.train import loop
from repro.train.runlog import read_metrics

COPY = SECTIONS["copy"]
CFG = ["train.steps=40", "train.log_every=5", "train.eval_every=20", "train.checkpoint_every=20"]


def _events(wd):
    ea = EventAccumulator(str(wd / "tb"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


class _Crash(Exception):
    pass


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A copy smoke run that crashes after step 26 (checkpoint at 20, steps 25 logged), then
    resumes from step 20 to 40."""
    wd = tmp_path_factory.mktemp("tb") / "run"
    exp = apply_overrides(COPY.presets["smoke"], CFG)

    class Crashing(loop.Prefetcher):
        def get(self, step):
            if step == 26:
                raise _Crash
            return super().get(step)

    mp = pytest.MonkeyPatch()
    mp.setattr(loop, "Prefetcher", Crashing)
    with pytest.raises(_Crash):
        app.run(COPY, exp, wd, show_progress=False)
    mp.undo()
    before = _events(wd).Scalars("train/loss")
    row = app.run(COPY, exp, wd, show_progress=False)
    return exp, wd, row, before


@pytest.mark.e2e  # a training run crashed and resumed: ~1.5 min on 2 cores, after `make test`
def test_events_have_the_expected_tags_and_steps_after_a_crash_and_resume(resumed_run):
    _, wd, row, before = resumed_run
    assert [e.step for e in before] == [5, 10, 15, 20, 25]  # the crashed session's steps
    files = sorted((wd / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 2  # one file per session
    # The resumed session's file opens with TensorBoard's purge marker at step 21: readers drop
    # what the crashed session logged after its checkpoint at step 20.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    first = [e for e in EventFileLoader(str(files[1])).Load() if e.HasField("session_log")]
    assert first and first[0].session_log.status == first[0].session_log.START and first[0].step == 21
    assert not [e for e in EventFileLoader(str(files[0])).Load() if e.HasField("session_log")]
    ea = _events(wd)
    tags = set(ea.Tags()["scalars"])
    for t in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second", "train/accuracy"):
        assert t in tags and [e.step for e in ea.Scalars(t)] == [5, 10, 15, 20, 25, 30, 35, 40], t
    protocol = row["protocol"].replace(":", "_")  # copy: blocked:16
    for k in ("nats_per_token", "bits_per_token", "token_accuracy"):
        assert [e.step for e in ea.Scalars(f"eval/{protocol}/{k}")] == [20, 40], k
    # The values are the resumed session's, as metrics.jsonl reads after its resume marker.
    logged = {r["step"]: r for r in read_metrics(wd / "metrics.jsonl") if "loss" in r}
    for e in ea.Scalars("train/loss"):
        assert e.value == pytest.approx(logged[e.step]["loss"], rel=1e-6)
    evals = [r for r in read_metrics(wd / "metrics.jsonl") if "eval/nats_per_token" in r]
    assert ea.Scalars(f"eval/{protocol}/nats_per_token")[-1].value == pytest.approx(
        evals[-1]["eval/nats_per_token"], rel=1e-6
    )
    lr = [e.value for e in ea.Scalars("train/lr")]  # copy smoke: 5 warm-up steps to 3e-3
    assert lr[0] == pytest.approx(3e-3 * 4 / 5) and lr[-1] == pytest.approx(3e-3)


def test_tensorboard_off(tmp_path):
    exp = apply_overrides(COPY.presets["smoke"], [*CFG[:1], "train.steps=5", "train.tensorboard=false"])
    app.run(COPY, exp, tmp_path / "run", show_progress=False)
    assert (tmp_path / "run" / "results.json").is_file() and not (tmp_path / "run" / "tb").exists()


@pytest.mark.e2e  # a training run crashed and resumed: ~1.5 min on 2 cores, after `make test`
def test_a_config_json_without_the_tensorboard_key_still_resumes(resumed_run, tmp_path):
    exp, wd, _, _ = resumed_run
    w2 = tmp_path / "old"
    shutil.copytree(wd, w2)
    cfg = json.loads((w2 / "config.json").read_text())
    del cfg["train"]["tensorboard"]  # as written before the field existed
    (w2 / "config.json").write_text(json.dumps(cfg))
    more = apply_overrides(exp, ["train.steps=45"])
    row = app.run(COPY, more, w2, show_progress=False)
    assert row["steps"] == 45
    # The fingerprint the checkpoints record is what it was before the field existed.
    d = experiment_to_dict(exp)
    d.pop("mesh")
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("steps", "tensorboard")}
    old = hashlib.sha256(json.dumps(json.loads(json.dumps(d)), sort_keys=True).encode()).hexdigest()
    assert loop.config_fingerprint(exp) == old
    off = dataclasses.replace(exp, train=dataclasses.replace(exp.train, tensorboard=False))
    assert loop.config_fingerprint(off) == old


class _PNGToy(type(toy.SECTION)):
    def write_samples(self, exp, prompts, generated, outdir, settings):
        from PIL import Image

        out = super().write_samples(exp, prompts, generated, outdir, settings)
        Image.fromarray(np.full((8, 12, 3), 200, np.uint8)).save(outdir / "grid.png")
        return out


def test_sample_pngs_become_tensorboard_images(tmp_path):
    sec = _PNGToy(toy.SECTION.presets, toy.SECTION.default_preset)
    wd = tmp_path / "run"
    app.run(sec, toy.SMOKE, wd, data_dir=tmp_path / "data", show_progress=False)
    app.sample_run(sec, wd, num=1, data_dir=tmp_path / "data")
    ea = _events(wd)
    (img,) = ea.Images("samples/grid")
    assert img.step == 12 and (img.width, img.height) == (12, 8)
