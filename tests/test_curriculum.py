"""Length curricula (``train.init_from="preset:NAME"``, repro/app.py) and growing learned
position tables (repro/train/loop.py), as the copy task's cpu_512 ... cpu_2048 presets use them."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import SECTIONS
from experiments.copy import CopySection
from repro import app
from repro.checkpoint import Checkpointer
from repro.config import ConfigError, apply_overrides
from repro.train.loop import _grow_into, _growable, _params_from
from repro.train.state import build

COPY = SECTIONS["copy"]


def _learned(exp, seq_len: int, name: str, init_from: str = ""):
    return dataclasses.replace(
        apply_overrides(exp, [f"data.seq_len={seq_len}", f"model.max_context={seq_len}", "train.steps=4",
                              "train.eval_every=4", "train.checkpoint_every=4", f"train.init_from={init_from}",
                              "model.position_encoding=learned", "data.eval_examples=8"]),
        preset=name,
    )  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A three-stage smoke curriculum a (32) -> b (48) -> c (64), learned position tables of
    33 / 49 / 65 rows, run once through app.run."""
    smoke = COPY.presets["smoke"]
    a = _learned(smoke, 32, "a")
    b = _learned(smoke, 48, "b", "preset:a")
    c = _learned(smoke, 64, "c", "preset:b")
    sec = CopySection({**COPY.presets, "a": a, "b": b, "c": c}, "smoke")
    wd = tmp_path_factory.mktemp("curriculum") / "c"
    row = app.run(sec, c, wd, show_progress=False)
    return sec, wd, row


@pytest.mark.e2e  # the chain fixture trains three smoke stages (~30 s): kept out of make test's 10 minutes
def test_a_curriculum_trains_its_stages_first_and_records_them(chain):
    sec, wd, row = chain
    assert [e.preset for e in app.curriculum(sec, sec.presets["c"])] == ["a", "b"]
    for name in ("a", "b"):
        stage = json.loads((wd / "stages" / name / "results.json").read_text())
        assert stage["preset"] == name and stage["steps"] == 4
    assert [s["preset"] for s in row["curriculum"]] == ["a", "b"]
    assert [s["workdir"] for s in row["curriculum"]] == ["stages/a", "stages/b"]
    assert [s["seq_len"] for s in row["curriculum"]] == [32, 48]
    assert row["curriculum_steps"] == 12 and row["steps"] == 4
    assert row["curriculum_wall_seconds"] > row["wall_seconds"] > 0
    # stage b's row names its own earlier stage, as a run of preset b alone would
    assert [s["preset"] for s in json.loads((wd / "stages" / "b" / "results.json").read_text())["curriculum"]] == ["a"]
    assert row["config"]["train"]["init_from"] == "preset:b"  # no machine path in the config


@pytest.mark.e2e  # the chain fixture trains three smoke stages (~30 s): kept out of make test's 10 minutes
def test_rerunning_a_finished_curriculum_trains_nothing(chain):
    sec, wd, row = chain
    logs = {p: p.read_bytes() for p in wd.rglob("metrics.jsonl")}
    again = app.run(sec, sec.presets["c"], wd, show_progress=False)
    assert again["steps"] == row["steps"] and len(logs) == 3
    assert all(p.read_bytes() == b for p, b in logs.items())


@pytest.mark.e2e  # the chain fixture trains three smoke stages (~30 s): kept out of make test's 10 minutes
def test_stages_under_a_stage_root_are_shared_runs(chain, tmp_path):
    """repro reproduce passes stage_root = its runs directory: a curriculum's stage that the sweep
    already trained as a preset of its own is that run, not trained again."""
    import shutil

    sec, wd, _ = chain
    root = tmp_path / "runs"
    shutil.copytree(wd / "stages" / "a", root / "a")  # the sweep's finished run of preset a
    log = (root / "a" / "metrics.jsonl").read_bytes()
    row = app.run(sec, sec.presets["b"], root / "b", show_progress=False, stage_root=root)
    assert (root / "a" / "metrics.jsonl").read_bytes() == log and not (root / "b" / "stages").exists()
    assert row["curriculum"][0]["workdir"] == "../a" and row["steps"] == 4


@pytest.mark.e2e  # the chain fixture trains three smoke stages (~30 s): kept out of make test's 10 minutes
def test_a_stage_grows_its_position_table_from_the_shorter_stage(chain):
    """Stage b starts from stage a's parameters: every array as a left it, except the position
    table, whose first 33 rows are a's and whose 16 new rows keep b's fresh initialisation."""
    sec, wd, _ = chain
    b = dataclasses.replace(sec.presets["b"], train=dataclasses.replace(sec.presets["b"].train, init_from=""))
    run = build(b, init=False)
    src, step = _params_from(wd / "stages" / "a", run, print)
    assert step == 4
    ckpt = Checkpointer(wd / "stages" / "a", read_only=True)
    saved = ckpt.restore(step, build(sec.presets["a"], init=False).abstract)["params"]
    ckpt.close()
    fresh = build(b).params
    grown = _grow_into(fresh, src)
    flat = jax.tree_util.tree_flatten_with_path(grown)[0]
    n_tables = 0
    for (path, g), s, f in zip(flat, jax.tree.leaves(saved), jax.tree.leaves(fresh), strict=True):
        g, s, f = np.asarray(g), np.asarray(s), np.asarray(f)
        if "pos_tables" in jax.tree_util.keystr(path):
            n_tables += 1
            assert s.shape == (33, g.shape[1]) and g.shape == (49, g.shape[1])
            np.testing.assert_array_equal(g[:33], s)
            np.testing.assert_array_equal(g[33:], f[33:])
        else:
            np.testing.assert_array_equal(g, s)
    assert n_tables == 1


def test_stretched_tables_read_the_source_table_at_the_scaled_position():
    """train.init_positions=nearest / linear: row i of the longer table is the source's table at
    i * (n_src - 1) / (n - 1), so the first and last rows and the mirror map carry over."""
    import jax.numpy as jnp

    src = {"pos_tables": [jnp.arange(5, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))], "w": jnp.ones(2)}
    fresh = {"pos_tables": [jnp.zeros((9, 3))], "w": jnp.zeros(2)}
    grown = _grow_into(fresh, src, "nearest")
    np.testing.assert_array_equal(np.asarray(grown["pos_tables"][0][:, 0]), [0, 0, 1, 2, 2, 2, 3, 4, 4])
    mixed = _grow_into(fresh, src, "linear")
    np.testing.assert_allclose(np.asarray(mixed["pos_tables"][0][:, 0]), np.arange(9) / 2)
    np.testing.assert_array_equal(np.asarray(grown["w"]), 1.0)
    extended = _grow_into(fresh, src, "extend")
    np.testing.assert_array_equal(np.asarray(extended["pos_tables"][0][:, 0]), [0, 1, 2, 3, 4, 0, 0, 0, 0])


def test_only_position_tables_may_grow():
    a = build(_learned(COPY.presets["smoke"], 32, "a"), init=False).abstract["params"]
    longer = build(_learned(COPY.presets["smoke"], 48, "b"), init=False).abstract["params"]
    wider = build(apply_overrides(_learned(COPY.presets["smoke"], 32, "a"), ["model.d_model=64"]), init=False)
    assert _growable(a, longer) and _growable(a, a)
    assert not _growable(longer, a)  # shrinking drops trained rows
    assert not _growable(a, wider.abstract["params"])


def test_curriculum_errors_are_one_line(tmp_path):
    smoke = COPY.presets["smoke"]
    loop = CopySection({**COPY.presets, "x": _learned(smoke, 32, "x", "preset:y"),
                        "y": _learned(smoke, 48, "y", "preset:x")}, "smoke")  # fmt: skip
    with pytest.raises(app.UserError, match="loops back"):
        app.curriculum(loop, loop.presets["x"])
    with pytest.raises(app.UserError, match="has no preset 'nope'"):
        app.curriculum(COPY, _learned(smoke, 32, "z", "preset:nope"))
    from repro.train.loop import train

    exp = _learned(smoke, 32, "z", "preset:smoke")
    with pytest.raises(ConfigError, match="curriculum stage"):
        train(exp, app.pipeline_for(COPY, exp), tmp_path / "z", section=COPY, show_progress=False)
    assert not (tmp_path / "z" / "config.json").exists()


@pytest.mark.parametrize("name", ["cpu_512", "cpu_1024", "cpu_2048", "cpu_4096"])
def test_copy_curriculum_presets_chain_with_growing_tables(name):
    """Each stage of the copy curriculum presets can start from the one before: same model but
    for a longer position table, latents = the mirrored half, crops = the whole sequence."""
    stages = app.curriculum(COPY, COPY.presets[name]) + [COPY.presets[name]]
    assert stages[0].preset == "cpu" and len(stages) >= 2
    shapes = [build(e, init=False).abstract["params"] for e in stages]
    for e, prev, cur in zip(stages[1:], shapes, shapes[1:], strict=False):
        assert _growable(prev, cur) and [x.shape for x in jax.tree.leaves(prev)] != [
            x.shape for x in jax.tree.leaves(cur)
        ]
        assert e.model.num_latents == e.data.seq_len // 2 and e.data.minimum_crop_length == e.data.seq_len - 1
        assert e.data.stop_at_accuracy == 0.999
