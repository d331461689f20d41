"""`repro bench` smoke test: tiny shapes, one repetition; checks the outputs' form, never timings."""

from __future__ import annotations

import copy
import json

from typer.testing import CliRunner

from cli import app
from repro.bench import markdown, summarise

TINY = ["--d-model", "32", "--num-latents", "16", "--num-layers", "1", "--heads", "2", "--batch", "2"]


def test_bench_writes_table_and_plot(tmp_path):
    args = ["bench", "--lengths", "64", *TINY, "--repeats", "1", "--matmul-size", "256", "--out", str(tmp_path)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "training.json").read_text())
    for key in ("git_sha", "device", "versions", "date", "load_average_before", "matmul_peak"):
        assert res[key]
    assert res["matmul_peak"]["flops_per_second"] > 0
    rows = {x["model"]: x for x in res["rows"]}
    assert set(rows) == {"perceiver_ar", "transformer"}
    assert rows["perceiver_ar"]["num_latents"] == 16 and rows["transformer"]["num_latents"] == 64
    assert rows["transformer"]["layers"] == rows["perceiver_ar"]["layers"] == 2
    for x in rows.values():
        assert x["status"] == "ok" and x["step_seconds"] > 0 and len(x["step_seconds_all"]) == 1
        assert 0 < x["fraction_of_matmul_peak"] and x["compiled_memory"]["peak_estimate"] > 0
    assert res["ratios"][0]["context"] == 64
    md = (tmp_path / "training.md").read_text()
    assert "| perceiver_ar | 64 |" in md and "| transformer | 64 |" in md
    assert (tmp_path / "training_step_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A model over the memory budget is reported, not run (the table renders without its timings).
    over = copy.deepcopy(res)
    row = over["rows"][1]
    for k in ("step_seconds", "target_tokens_per_second", "achieved_flops_per_second"):
        row.pop(k)
    row["status"] = "over_budget: compiled peak estimate 30 GiB > 12 GiB"
    over["ratios"], over["extrapolated"] = summarise(over["rows"], [64])
    assert over["ratios"] == [] and over["extrapolated"] == []  # nothing to extrapolate from
    md = markdown(over)
    assert "| transformer | 64 | 64 | - |" in md and "over_budget" in md
