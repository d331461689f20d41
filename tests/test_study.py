"""Claims studies (repro/study.py, experiments/studies.py): the verdict rule on synthetic rows,
study.json's summary, every design's plan (points, equal FLOPs, shared runs), the CLI's errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from repro.study import (
    DOES_NOT_SHOW,
    HOLDS,
    INCONCLUSIVE,
    STUDY_SCHEMA,
    Comparison,
    Design,
    Point,
    Study,
    _baselines,
    plan,
    read_study,
    summarise,
    verdict,
    write_study,
)


# ------------------------------------------------------------------------------------ verdict()
def test_verdict_holds_when_the_claimed_sign_exceeds_two_standard_errors():
    v = verdict([-0.10], [0.02], expected=-1)
    assert v["verdict"] == HOLDS and v["effect"] == pytest.approx(-0.10) and v["stderr"] == pytest.approx(0.02)


def test_verdict_does_not_show_when_the_opposite_sign_exceeds_two_standard_errors():
    assert verdict([0.10], [0.02], expected=-1)["verdict"] == DOES_NOT_SHOW
    assert verdict([-0.10], [0.02], expected=1)["verdict"] == DOES_NOT_SHOW


def test_verdict_inconclusive_within_two_standard_errors():
    assert verdict([-0.03], [0.02], expected=-1)["verdict"] == INCONCLUSIVE
    assert verdict([0.039], [0.02], expected=-1)["verdict"] == INCONCLUSIVE


def test_verdict_never_from_seeds_that_disagree_in_sign():
    # Each seed alone would be decisive (tiny eval error), but they disagree: inconclusive.
    v = verdict([-0.5, 0.01], [1e-4, 1e-4], expected=-1)
    assert v["verdict"] == INCONCLUSIVE and "disagree" in v["why"]


def test_verdict_combines_eval_error_with_seed_spread():
    effects, ses = [-0.15, -0.30], [0.01, 0.01]
    v = verdict(effects, ses, expected=-1)
    # se^2 = mean(se_eval^2) / S + var(effects) / S = 1e-4 / 2 + 0.01125 / 2
    assert v["stderr"] == pytest.approx(math.sqrt(1e-4 / 2 + 0.01125 / 2))
    assert v["verdict"] == HOLDS  # -0.225 vs 2 x 0.0753
    # The same mean with a larger seed spread is no longer decisive.
    assert verdict([0.0 - 1e-9, -0.4], ses, expected=-1)["verdict"] == INCONCLUSIVE


def test_verdict_rejects_missing_numbers():
    assert verdict([float("nan")], [0.1], expected=-1)["verdict"] == INCONCLUSIVE
    with pytest.raises(ValueError):
        verdict([], [], expected=-1)
    with pytest.raises(ValueError):
        verdict([0.1], [0.1], expected=0)


# ------------------------------------------------------------------------------------ summarise()
def _row(point, seed, value, se=0.01, x=1.0):
    return {"point": point, "x": x, "series": "s", "seed": seed, "value": value, "stderr": se, "step_seconds": 0.1,
            "train_flops": 1e9, "steps": 10, "wall_seconds": 1.0, "max_context": 16, "num_latents": 8,
            "dataset": {"name": "demo", "is_paper_data": False}, "git_sha": "abc", "device": "cpu"}  # fmt: skip


def test_summarise_rows_into_points_comparisons_and_a_verdict():
    design = Design(
        preset="smoke",
        points=(Point("a", 1), Point("b", 2)),
        comparisons=(Comparison("b", "a", expected=-1), Comparison("b", threshold=2.0, expected=1)),
        seeds=(0, 1),
    )
    study = Study("t", "t", "claim", "[I]", "pg19", {"smoke": design})
    rows = [_row("a", 0, 3.0), _row("a", 1, 3.1), _row("b", 0, 2.5), _row("b", 1, 2.62)]
    doc = summarise(study, "smoke", design, rows)
    a, b = doc["points"]
    assert a["mean"] == pytest.approx(3.05) and b["seeds"] == 2
    c1, c2 = doc["comparisons"]
    assert c1["per_seed"] == {"0": pytest.approx(-0.5), "1": pytest.approx(-0.48)}
    assert c1["verdict"] == HOLDS and doc["verdict"] == HOLDS  # the first comparison is the claim
    assert c2["effect"] == pytest.approx(0.56) and c2["verdict"] == HOLDS
    assert doc["schema"] == STUDY_SCHEMA and doc["datasets"] == ["demo"] and not doc["is_paper_data"]


def test_write_and_read_study(tmp_path: Path):
    design = Design(preset="smoke", points=(Point("a", 1), Point("b", 2)), comparisons=(Comparison("b", "a"),))
    study = Study("t", "t", "claim", "[I]", "pg19", {"smoke": design})
    doc = summarise(study, "smoke", design, [_row("a", 0, 3.0, x=1), _row("b", 0, 3.5, x=2)])
    assert doc["verdict"] == DOES_NOT_SHOW
    path = write_study(tmp_path, doc)
    assert read_study(path)["comparisons"][0]["effect"] == pytest.approx(0.5)
    assert (tmp_path / "study.png").stat().st_size > 1000
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a study file"):
        read_study(tmp_path / "bad.json")


def test_baselines_in_the_study_metric():
    """A row's baselines come out in the study's metric: its own key (a text baseline's
    nats_per_token), else the value where the metric is the row's headline; else left out."""
    ev = {"headline": {"key": "word_perplexity"},
          "baselines": {"unigram": {"value": 900.0, "nats_per_token": 6.2, "description": "u"}}}  # fmt: skip
    assert _baselines(ev, "nats_per_token") == {"unigram": {"value": 6.2, "description": "u", "eval_tokens": None}}
    assert _baselines(ev, "word_perplexity")["unigram"]["value"] == 900.0
    assert _baselines(ev, "bits_per_dim") == {}
    design = Design(preset="smoke", points=(Point("a", 1), Point("b", 2)), comparisons=(Comparison("b", "a"),))
    study = Study("t", "t", "claim", "[I]", "pg19", {"smoke": design})
    rows = [_row("a", 0, 3.0), _row("b", 0, 3.5)]
    rows[0]["baselines"] = {"unigram": {"value": 4.0, "description": "u"}}
    rows[1]["baselines"] = {"unigram": {"value": 4.2, "description": "u"}}
    doc = summarise(study, "smoke", design, rows)
    assert doc["baselines"] == {"unigram": {"value": pytest.approx(4.1), "min": 4.0, "max": 4.2, "description": "u"}}


# ------------------------------------------------------------------------------------ the designs
def test_every_design_plans(tmp_path: Path):
    from experiments.studies import STUDIES

    assert {s.claim_id for s in STUDIES.values()} >= {
        "context-at-fixed-latents", "equal-compute", "context-restriction", "cache-reset", "long-copy-small-latents"
    }  # fmt: skip
    for name, st in STUDIES.items():
        assert set(st.designs) >= {"cpu", "smoke"}, name
        for scale, design in st.designs.items():
            runs = plan(st, scale, tmp_path / name)
            names = {p.name for p in design.points}
            assert len(runs) == len(design.points) * len(design.seeds)
            for c in design.comparisons:
                assert c.treatment in names and (c.reference in names or c.threshold is not None), (name, c)
            for r in runs:
                assert r.exp.scale == scale, (name, r.point.name)  # never a paper / custom row
            # Every point shares the design's steps unless it matches FLOPs, and one protocol.
            plain = {r.exp.train.steps for r in runs if not r.point.match_flops}
            assert len(plain) == 1, (name, scale, plain)
            if not any(p.protocol for p in design.points):
                assert len({r.protocol for r in runs}) == 1


def test_equal_compute_points_train_for_the_same_flops(tmp_path: Path):
    from experiments.studies import STUDIES

    for scale in ("cpu", "smoke"):
        runs = plan(STUDIES["equal-compute"], scale, tmp_path)
        budget = runs[0].train_flops
        for r in runs[1:]:
            assert r.point.match_flops
            per_step = r.train_flops / r.exp.train.steps
            assert abs(r.train_flops - budget) <= per_step / 2 + 1, (r.point.name, r.train_flops, budget)
            assert r.exp.optim.warmup_steps <= r.exp.train.steps


def test_points_differing_only_in_protocol_share_one_run(tmp_path: Path):
    from experiments.studies import STUDIES

    runs = plan(STUDIES["cache-reset"], "cpu", tmp_path)
    assert len({r.workdir for r in runs}) == 1
    assert [r.shared_with for r in runs][1:] == ["F=8"] * (len(runs) - 1)
    assert {r.protocol for r in runs} == {f"cached:{f}" for f in (8, 32, 64, 96, 120)}


def test_seed_overrides_seed_both_init_and_data(tmp_path: Path):
    from experiments.studies import STUDIES

    runs = plan(STUDIES["context-pg19"], "cpu", tmp_path)
    seeds = {(r.exp.train.seed, r.exp.data.train_seed) for r in runs}
    assert seeds == {(0, 0), (1, 1)}
    assert {r.exp.model.num_latents for r in runs} == {128}
    assert sorted({r.exp.model.max_context for r in runs}) == [128, 512, 2048]


# ------------------------------------------------------------------------------------ CLI errors
def test_study_cli_errors_are_one_line(tmp_path: Path):
    from typer.testing import CliRunner

    import cli

    cli._HARD_EXIT = False
    runner = CliRunner()
    for args, msg in (
        (["study", "run", "nope"], "unknown study 'nope'"),
        (["study", "run", "context-pg19", "--preset", "paper"], "has no 'paper' design"),
        (["study", "show", "context-pg19", "--path", str(tmp_path / "x.json")], "no recorded study"),
    ):
        r = runner.invoke(cli.app, args, standalone_mode=False)
        assert isinstance(r.exception, cli.UserError) and msg in str(r.exception), (args, r.exception)


def test_study_dry_run_prints_points_and_an_estimate():
    from typer.testing import CliRunner

    import cli

    r = CliRunner().invoke(cli.app, ["study", "run", "equal-compute", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "Transformer-N2048" in r.output and "minutes" in r.output
    # The estimate's throughput comes from the study's own section's record, and says so.
    assert "results/pg19/cpu run" in " ".join(r.output.split())


def test_calibration_reads_the_named_sections_record_or_says_it_has_none():
    from repro import study

    rate, source = study.calibrate("copy", "cpu")
    assert rate > 0 and "results/copy/cpu" in source
    rate, source = study.calibrate("copy", "no_such_preset")
    assert rate == study.FALLBACK_FLOPS_PER_SECOND and "constant" in source
