"""The `repro` command as a user runs it: end-to-end smoke training, resume, eval, bad input."""

import json

import pytest
from conftest import one_error_line


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, repro):
    wd = tmp_path_factory.mktemp("smoke") / "run"
    r = repro("run", "copy", "--preset", "smoke", "--workdir", str(wd), "--no-progress")
    assert r.returncode == 0, r.stderr
    return wd, r


@pytest.mark.e2e
def test_smoke_run_trains_and_writes_results(smoke_run):
    wd, r = smoke_run
    assert "mirrored-half token accuracy" in r.stdout
    res = json.loads((wd / "results.json").read_text())
    assert res["scale"] == "smoke" and res["steps"] == 40
    assert res["metrics"]["eval_documents"] == 32 and "split validation (32 documents)" in r.stdout  # eval_examples
    for key in ("git_sha", "data_hash", "device", "versions", "config", "num_params"):
        assert res[key]
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    train = [x["loss"] for x in rows if "loss" in x]
    assert len(train) == 8
    assert sum(train[-2:]) / 2 < train[0] - 0.1, train  # the loss fell
    assert json.loads((wd / "config.json").read_text())["preset"] == "smoke"
    assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["20", "40"]


@pytest.mark.e2e
def test_rerun_resumes_and_eval_matches(smoke_run, repro):
    wd, first = smoke_run
    before = json.loads((wd / "results.json").read_text())["metrics"]
    r = repro("run", "copy", "--preset", "smoke", "--workdir", str(wd), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "finished" in r.stderr and "at step 40" in r.stderr  # a finished run is not trained on
    after = json.loads((wd / "results.json").read_text())["metrics"]
    assert after["nats_per_token"] == pytest.approx(before["nats_per_token"], abs=1e-6)
    ev = repro("eval", "copy", "--workdir", str(wd))
    assert ev.returncode == 0, ev.stderr
    assert f"{before['nats_per_token']:.4f}" in ev.stdout
    assert "split validation (32 documents)" in ev.stdout and "protocol blocked:16: 32 documents" in ev.stdout


@pytest.mark.e2e
def test_different_config_in_same_workdir_is_refused(smoke_run, repro):
    wd, _ = smoke_run
    r = repro("run", "copy", "--preset", "smoke", "--workdir", str(wd), "--set", "model.d_model=64")
    assert r.returncode == 2 and "different config" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "copy", "--preset", "nope"], "unknown preset 'nope'"),
        (["run", "nosuch"], "unknown section 'nosuch'"),
        (["run", "copy", "--set", "model.bogus=1"], "unknown config key 'model.bogus'"),
        (["run", "copy", "--set", "model.num_latents=abc"], "not a valid int"),
        (["run", "copy", "--steps", "x"], "--steps"),
        (["eval", "copy", "--workdir", "/nonexistent/run"], "not a run directory"),
        # import official finds the section from the preset, or says why it cannot
        (["import", "official", "--checkpoint", "x", "--preset", "nope", "--workdir", "w"], "no section has this"),
        (["import", "official", "--checkpoint", "x", "--preset", "cpu", "--workdir", "w"], "name one with --section"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, repro):
    r = repro(*args, cwd=tmp_path)
    assert message in one_error_line(r.returncode, r.stderr), (r.returncode, r.stdout, r.stderr)
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_list_shows_presets(repro):
    r = repro("list")
    assert r.returncode == 0
    assert "random_mirrored_131072" in r.stdout and "smoke" in r.stdout
