"""`repro study run NAME --preset smoke` for every study, as a user runs it (subprocesses), then
`repro report` with the Claims section first; a rerun trains nothing and writes the same numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from repro.study import DOES_NOT_SHOW, HOLDS, INCONCLUSIVE


@pytest.mark.e2e
def test_every_study_runs_at_smoke_scale_and_the_report_opens_with_claims(repro, tmp_path: Path):
    from experiments.studies import STUDIES

    runs, out = tmp_path / "runs", tmp_path / "studies"
    for name in STUDIES:
        r = repro("study", "run", name, "--preset", "smoke", "--runs", str(runs), "--out", str(out / name),
                  "--no-progress", timeout=900)  # fmt: skip
        assert r.returncode == 0, (name, r.stderr[-3000:])
        doc = json.loads((out / name / "study.json").read_text())
        assert doc["verdict"] in (HOLDS, DOES_NOT_SHOW, INCONCLUSIVE)
        assert doc["scale"] == "smoke" and (not doc["is_paper_data"] or doc["section"] == "copy")
        design = STUDIES[name].designs["smoke"]
        assert len(doc["runs"]) == len(design.points) * len(design.seeds)
        assert all(p["value"] is not None and p["stderr"] is not None for p in doc["runs"]), name
        assert "verdict:" in r.stdout
        assert (out / name / "study.png").stat().st_size > 1000

    # A rerun resumes: every point is finished, nothing trains, the same numbers come out.
    name = "context-pg19"
    before = json.loads((out / name / "study.json").read_text())
    r = repro("study", "run", name, "--preset", "smoke", "--runs", str(runs), "--out", str(out / name), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("finished") == len(before["runs"])
    assert not re.search(r"step\s+\d+: eval", r.stderr) and "evaluating" not in r.stderr  # no training, no re-eval
    after = json.loads((out / name / "study.json").read_text())
    assert [p["value"] for p in after["runs"]] == [p["value"] for p in before["runs"]]

    r = repro("study", "show", name, "--path", str(out / name / "study.json"))
    assert r.returncode == 0 and before["verdict"] in r.stdout

    r = repro("report", str(out), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.index("## Claims") < md.index("## Synthetic mirrored copy")
    for name in STUDIES:
        assert f'### <a id="study-{name}-smoke"></a>' in md
        assert (tmp_path / "report" / "plots" / f"study_{name}_smoke.png").is_file()
