"""It learns: the copy task's cpu preset reaches >= 99.9 % mirrored-half accuracy (slow: minutes)."""

import pytest

from experiments import SECTIONS
from repro.train.loop import train


@pytest.mark.slow
def test_cpu_preset_solves_the_copy_task(tmp_path):
    mod = SECTIONS["copy"]
    exp = mod.presets["cpu"]
    res = train(exp, mod.make_dataset(exp), tmp_path / "run", show_progress=False)
    assert res["metrics"]["scored_token_accuracy"] >= 0.999, res["metrics"]
    assert res["stopped_early"] and res["steps"] < exp.train.steps


@pytest.mark.slow
def test_length_64_learns_within_a_minute_or_two(tmp_path):
    from repro.config import apply_overrides

    mod = SECTIONS["copy"]
    exp = apply_overrides(
        mod.presets["cpu"],
        ["data.seq_len=64", "model.max_context=64", "model.num_latents=32", "data.minimum_crop_length=63",
         "train.steps=800", "data.stop_at_accuracy=0.99", "model.dropout=0"],
    )  # fmt: skip
    res = train(exp, mod.make_dataset(exp), tmp_path / "run", show_progress=False)
    assert res["metrics"]["scored_token_accuracy"] >= 0.99, res["metrics"]
