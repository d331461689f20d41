"""What a run directory promises (docs/guarantees.md), each defect of the adversarial review
reproduced: append-only logs, one writer, finished runs stay finished, verified checkpoints with
fallback, config fingerprints, one-line errors for every bad config value and CLI option."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import one_error_line, repro_cmd

from experiments import SECTIONS
from repro import app
from repro.checkpoint import Checkpointer
from repro.config import ConfigError, apply_overrides
from repro.eval.metrics import NLLSums, perplexity, word_perplexity
from repro.train.runlog import RunLog, read_metrics

COPY = SECTIONS["copy"]


# ----------------------------------------------------------------------------- every config field


def _boundary_values(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return ["0", "-1", str(2**40)]
    if isinstance(value, float):
        return ["0", "-1", "1e300", "nan", "inf"]
    return []


def _fields(exp):
    for sec in ("model", "data", "optim", "train", "mesh"):
        sub = getattr(exp, sec)
        for f in dataclasses.fields(sub):
            yield f"{sec}.{f.name}", getattr(sub, f.name)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_config_field_at_its_boundaries_is_valid_or_one_config_error(name):
    """0, -1, huge, NaN and inf for every numeric field of every section's smoke preset: either
    the value validates or apply_overrides raises ConfigError (never another exception)."""
    exp = SECTIONS[name].presets["smoke"]
    refused = 0
    for key, value in _fields(exp):
        for raw in _boundary_values(value):
            try:
                apply_overrides(exp, [f"{key}={raw}"])
            except ConfigError:
                refused += 1
    assert refused > 40


def test_valid_boundary_values_build(tmp_path):
    """Values that validate also build (abstract shapes): no crash hides behind a valid config."""
    from repro.train.state import build

    exp = COPY.presets["smoke"]
    for key, value in _fields(exp):
        for raw in _boundary_values(value):
            if raw in ("1e300", str(2**40)) or key.startswith("mesh."):
                continue  # valid huge budgets (steps, chunk sizes) are valid; not built here
            try:
                e = apply_overrides(exp, [f"{key}={raw}"])
            except ConfigError:
                continue
            build(e, init=False)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.self_heads=0", "model.self_heads"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.grad_accum=-1", "train.grad_accum"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=-4", "train.batch_size"),
        ("train.log_every=0", "train.log_every"),
        ("train.eval_every=0", "train.eval_every"),
        ("train.checkpoint_every=0", "train.checkpoint_every"),
        ("data.eval_examples=0", "data.eval_examples"),
        ("data.eval_examples=-3", "data.eval_examples"),
        ("model.vocab_size=0", "model.vocab_size"),
        ("model.d_model=0", "model.d_model"),
        ("model.cross_widening=0", "model.cross_widening"),
        ("model.query_chunk=0", "model.query_chunk"),
        ("train.seed=4294967297", "train.seed"),
        ("data.seq_len=33", "data.seq_len"),
        ("data.seq_len=2", "data.seq_len"),
        ("model.num_layers=-1", "model.num_layers"),
        ("model.max_wavelength=-1", "model.max_wavelength"),
        ("data.name=x", "unknown config key 'data.name'"),
        ("optim.lr=nan", "optim.lr"),
        ("model.vocab_size=10", "model.vocab_size=10 is smaller than the data's vocabulary"),
    ],
)
def test_impossible_values_are_one_line_and_nothing_is_written(cli_inproc, tmp_path, override, message):
    wd = tmp_path / "run"
    code, _, err = cli_inproc("run", "copy", "--preset", "smoke", "--workdir", str(wd),
                        "--no-progress", "--set", override)  # fmt: skip
    assert one_error_line(code, err) and message in err, err
    assert not wd.exists()  # nothing written: the corrected rerun is not refused as "a different config"


@pytest.mark.parametrize("bad", ["[]", '"abc"', '{"model": 5}', '{"section": "copy", "model": {"d_model": "64"}}'])
def test_damaged_config_json_is_one_line(cli_inproc, tmp_path, bad):
    wd = tmp_path / "run"
    (wd / "checkpoints").mkdir(parents=True)
    (wd / "config.json").write_text(bad)
    code, _, err = cli_inproc("eval", "copy", "--workdir", str(wd))
    assert one_error_line(code, err), err
    code, _, err = cli_inproc("run", "copy", "--preset", "smoke", "--workdir", str(wd))
    assert one_error_line(code, err), err


def test_config_json_that_is_a_directory(cli_inproc, tmp_path):
    wd = tmp_path / "run"
    (wd / "config.json").mkdir(parents=True)
    code, _, err = cli_inproc("eval", "copy", "--workdir", str(wd))
    assert one_error_line(code, err), err


# ----------------------------------------------------------------------------- paths


def test_bad_workdirs_are_one_line(cli_inproc, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for wd in (f, f / "run", tmp_path / ("x" * 300)):
        code, _, err = cli_inproc("run", "copy", "--preset", "smoke", "--workdir", str(wd),
                            "--no-progress")  # fmt: skip
        assert one_error_line(code, err), (wd, err)


def test_full_disk_leaves_no_partial_file(monkeypatch, tmp_path):
    """ENOSPC in the middle of a result write (simulated): the error propagates, the old file
    stays whole and no temporary file is left behind."""
    import errno

    from repro import runinfo

    target = tmp_path / "results.json"
    runinfo.write_json_atomic(target, {"old": 1})
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            self.f.write(b[: len(b) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(target))

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(runinfo.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space"):
        runinfo.write_json_atomic(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# ----------------------------------------------------------------------------- the run log


def test_torn_metrics_line_is_skipped_and_the_next_row_starts_fresh(tmp_path):
    p = tmp_path / "metrics.jsonl"
    log = RunLog(p)
    log.append({"step": 1, "loss": 2.0})
    with open(p, "ab") as f:
        f.write(b'{"step": 2, "lo')  # a disk full / kill in the middle of a line
    warnings = []
    assert read_metrics(p, warn=warnings.append) == [{"step": 1, "loss": 2.0}] and "line 2" in warnings[0]
    log.append({"step": 2, "loss": 1.5})
    assert [r["step"] for r in read_metrics(p)] == [1, 2]


def test_resume_supersedes_rows_without_rewriting(tmp_path):
    p = tmp_path / "metrics.jsonl"
    log = RunLog(p)
    for s in (10, 20, 30):
        log.append({"step": s, "loss": 1.0})
    before = p.read_bytes()
    log.resume(20)  # the checkpoint was at 20: rows after it are superseded, not deleted
    log.append({"step": 30, "loss": 0.5})
    assert p.read_bytes().startswith(before)
    assert [(r["step"], r["loss"]) for r in read_metrics(p)] == [(10, 1.0), (20, 1.0), (30, 0.5)]


# ----------------------------------------------------------------------------- runs


class _StopsAtOnce(type(COPY)):
    def stop(self, exp, eval_metrics):
        return True  # as the copy task does once accuracy reaches data.stop_at_accuracy


STOPS = _StopsAtOnce(COPY.presets, COPY.default_preset)


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    """A copy smoke run that stops early at its first evaluation (step 20)."""
    wd = tmp_path_factory.mktemp("rel") / "run"
    exp = apply_overrides(COPY.presets["smoke"], ["train.checkpoint_every=10"])
    row = app.run(STOPS, exp, wd, show_progress=False)
    return exp, wd, row


def test_a_finished_run_stays_finished(copy_run):
    exp, wd, row = copy_run
    assert row["steps"] == 20 and row["stopped_early"]
    log = (wd / "metrics.jsonl").read_bytes()
    again = app.run(STOPS, exp, wd, show_progress=False)
    assert again["steps"] == 20 and (wd / "metrics.jsonl").read_bytes() == log  # nothing trained
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20]


def test_one_writer_per_workdir(copy_run):
    from repro.train.loop import _workdir_lock

    exp, wd, _ = copy_run
    with _workdir_lock(wd), pytest.raises(ConfigError, match="another `repro run` is training"):
        app.run(COPY, exp, wd, show_progress=False)


def test_eval_opens_checkpoints_read_only(copy_run):
    """A training's in-progress (temporary) checkpoint survives `repro eval` / `repro sample`."""
    exp, wd, _ = copy_run
    tmp = wd / "checkpoints" / "30.orbax-checkpoint-tmp-123"
    tmp.mkdir()
    app.load_run(COPY, wd)
    assert tmp.is_dir()
    tmp.rmdir()


def test_checkpoint_of_another_config_is_refused_even_without_config_json(copy_run, tmp_path):
    import shutil

    exp, wd, _ = copy_run
    other = tmp_path / "other"
    shutil.copytree(wd / "checkpoints", other / "checkpoints")
    exp2 = apply_overrides(COPY.presets["smoke"], ["optim.lr=1e-3"])
    with pytest.raises(ConfigError, match="written by a different config"):
        app.run(COPY, exp2, other, show_progress=False)


def _damage(ckpt_dir: Path):
    """Flip bytes in the largest array file of a checkpoint."""
    files = sorted(
        (p for p in ckpt_dir.rglob("*") if p.is_file() and "state" in str(p)), key=lambda p: p.stat().st_size
    )
    f = files[-1]
    b = bytearray(f.read_bytes())
    for i in range(len(b) // 3, len(b) // 3 + 64):
        b[i] ^= 0x5A
    f.write_bytes(bytes(b))


def test_damaged_latest_checkpoint_falls_back_to_the_older_one(copy_run, tmp_path, capsys):
    import shutil

    exp, wd, _ = copy_run
    w2 = tmp_path / "run"
    shutil.copytree(wd, w2)
    (w2 / "results.json").unlink()  # make the run resume (not "finished")
    _damage(w2 / "checkpoints" / "20")
    _, _, _, step = app.load_run(COPY, w2)  # read-only: warns, uses step 10
    assert step == 10
    row = app.run(STOPS, exp, w2, show_progress=False)  # training moves the damaged one aside
    assert (w2 / "checkpoints.damaged" / "20").is_dir() and row["steps"] == 20


def test_diverging_metrics_stay_finite_or_inf():
    assert perplexity(800.0, 0.1) == (math.inf, math.inf)
    assert word_perplexity(1e6, 10, 100, 0.1)[0] == math.inf
    s = NLLSums()
    s.add(np.full(4, 900.0), np.ones(4))
    assert s.summary()["perplexity"] == math.inf


# ----------------------------------------------------------------------------- CLI options


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num", "0"], "--num"), (["--num", "-1"], "--num"), (["--top-p", "0"], "--top-p"),
        (["--top-p", "-1"], "--top-p"), (["--top-p", "1.5"], "--top-p"), (["--temperature", "nan"], "--temperature"),
        (["--temperature", "-1"], "--temperature"), (["--top-k", "-1"], "--top-k"), (["--fill", "-1"], "--fill"),
        (["--fill", "1000"], "--fill"), (["--seed", "-1"], "--seed"), (["--seed", str(2**40)], "--seed"),
    ],
)  # fmt: skip
def test_sample_options(cli_inproc, copy_run, args, message):
    _, wd, _ = copy_run
    code, _, err = cli_inproc("sample", "copy", "--workdir", str(wd), *args)
    assert one_error_line(code, err) and message in err, err


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "copy", "--max-examples", "-1"], "--max-examples"),
        (["eval", "copy", "--max-examples", "0"], "--max-examples"),
        (["eval", "copy", "--protocol", "blocked:0"], "block size"),
        (["eval", "copy", "--protocol", "nope"], "unknown evaluation protocol"),
        (["eval", "copy", "--split", "bogus"], "bogus"),
    ],
)
def test_eval_options(cli_inproc, copy_run, args, message):
    _, wd, _ = copy_run
    code, _, err = cli_inproc(*args, "--workdir", str(wd), "--no-progress")
    assert one_error_line(code, err) and message in err, err


@pytest.mark.parametrize(
    "args",
    [["--repeats", "0"], ["--batch", "0"], ["--d-model", "0"], ["--matmul-size", "0"], ["--lengths", "1e11"],
     ["--lengths", "1"], ["--heads", "3"], ["--memory-budget-gb", "0"], ["--models", "x"], ["--num-layers", "-1"]],
)  # fmt: skip
def test_bench_options_fail_before_measuring(cli_inproc, tmp_path, args):
    code, _, err = cli_inproc("bench", "--out", str(tmp_path / "b"), *args)
    assert one_error_line(code, err), err
    assert not (tmp_path / "b" / "training.json").exists()


def test_bench_checks_its_output_directory_first(cli_inproc, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = cli_inproc("bench", "--out", str(tmp_path / "f" / "b"), "--lengths", "64")
    assert one_error_line(code, err) and "cannot write" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "copy", "--steps", "0"], "train.steps"),
        (["run", "copy", "--steps", "-1"], "train.steps"),
        (["run", "copy", "--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "host:port"),
        (["run", "copy", "--num-processes", "2"], "must be given together"),
    ],
)
def test_run_options(cli_inproc, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_inproc(*args)
    assert one_error_line(code, err) and message in err, err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- signals (subprocesses)


@pytest.mark.e2e
@pytest.mark.parametrize("delay", [0.5, 2.0, 5.0])
def test_ctrl_c_at_any_moment_of_start_up_exits_130(tmp_path, cli_env, delay):
    cmd = repro_cmd("run", "copy", "--preset", "smoke", "--workdir", str(tmp_path / "run"), "--no-progress")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode in (130, 0), (p.returncode, err[-2000:])  # 0: it had already finished
    assert b"Traceback" not in err and b"Segmentation" not in err


@pytest.mark.e2e
def test_concurrent_run_refuses(tmp_path, cli_env):
    wd = tmp_path / "run"
    args = ("run", "copy", "--preset", "smoke", "--steps", "400", "--workdir", str(wd), "--no-progress")
    first = subprocess.Popen(repro_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env)
    try:
        t0 = time.time()
        while not (wd / "metrics.jsonl").exists() and time.time() - t0 < 120:
            time.sleep(0.1)
        second = subprocess.run(repro_cmd(*args), capture_output=True, text=True, env=cli_env, timeout=120)
        assert second.returncode == 2 and "another `repro run` is training" in second.stderr, second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    ck = Checkpointer(wd, read_only=True)
    assert ck.latest_step() is not None
    ck.close()


# ----------------------------------------------------------------------------- real small filesystems


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(options) -> mount point``: a small tmpfs (e.g. "ro" or "size=256k"), unmounted after;
    skips where this machine does not let the test mount one."""
    mounts = []

    def mount(options: str) -> Path:
        d = tmp_path / f"mnt{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")
        mounts.append(d)
        return d

    yield mount
    for d in mounts:
        subprocess.run(["umount", str(d)], capture_output=True)


@pytest.mark.e2e
def test_read_only_filesystem_is_one_line(tmpfs, repro):
    d = tmpfs("ro,size=1m")
    r = repro("run", "copy", "--preset", "smoke", "--workdir", str(d / "run"), "--no-progress")
    assert one_error_line(r.returncode, r.stderr) and "Read-only" in r.stderr, r.stderr


@pytest.mark.e2e
def test_full_filesystem_while_checkpointing_is_one_line_and_keeps_nothing_half_written(tmpfs, repro):
    d = tmpfs("size=256k")  # room for config and logs, not for the first checkpoint
    r = repro("run", "copy", "--preset", "smoke", "--workdir", str(d / "run"), "--no-progress")
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 1 and "No space left on device" in lines[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not [p for p in (d / "run" / "checkpoints").iterdir() if p.name.isdigit()]  # no finished-looking step
    assert json.loads((d / "run" / "config.json").read_text())["preset"] == "smoke"


def test_a_second_ctrl_c_during_a_checkpoint_write_waits_for_it():
    from repro.train.loop import _StopRequest

    stop = _StopRequest()
    stop._handle(signal.SIGINT, None)  # first Ctrl-C: save and stop at the next step
    assert stop.signum == signal.SIGINT
    written = []
    with pytest.raises(KeyboardInterrupt):
        with stop.critical():
            stop._handle(signal.SIGINT, None)  # second Ctrl-C in the middle of the write: deferred
            written.append("checkpoint complete")
    assert written == ["checkpoint complete"]
    with pytest.raises(KeyboardInterrupt):  # outside a write the second Ctrl-C stops at once
        stop._handle(signal.SIGINT, None)


def test_result_rows_name_the_code_a_run_started_with(monkeypatch):
    """A checkout that moves while a run trains: the row names the SHA read at the start (the
    code that ran) and, beside it, the one at write time."""
    from repro import results, runinfo

    monkeypatch.setattr(runinfo, "_FIRST_SHA", None)
    shas = iter(["aaa111", "bbb222", "bbb222"])
    monkeypatch.setattr(runinfo, "git_sha_now", lambda: next(shas))
    assert runinfo.git_sha() == "aaa111"  # the run's start
    assert runinfo.git_sha() == "aaa111"  # cached, although HEAD moved
    from experiments import SECTIONS

    sec = SECTIONS["copy"]
    exp = sec.presets["smoke"]
    info = sec.source(exp).info
    row = results.make_row(kind="eval", exp=exp, section=sec, dataset=info, split="validation",
                           metrics={"scored_token_accuracy": 1.0}, steps=1, num_params=1)  # fmt: skip
    assert row["git_sha"] == "aaa111" and row["git_sha_at_write"] == "bbb222"


def test_init_from_starts_a_longer_run_from_another_runs_parameters(copy_run, tmp_path):
    """train.init_from (a curriculum stage): the copy smoke run's parameters start a run at a
    longer length (same shapes: sinusoidal positions have none), with a fresh optimiser at step
    0; a model of other shapes is refused in one line."""
    import jax

    from repro.train.loop import _params_from
    from repro.train.state import build

    exp, wd, _ = copy_run
    longer = apply_overrides(COPY.presets["smoke"], ["data.seq_len=48", "model.max_context=48", f"train.init_from={wd}",
                                                     "train.steps=4", "train.eval_every=4"])  # fmt: skip
    run = build(longer, init=False)
    params, step = _params_from(wd, run, print)
    ckpt = Checkpointer(wd, read_only=True)
    saved = ckpt.restore(step, run.abstract)["params"]
    ckpt.close()
    assert step == 20
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    row = app.run(COPY, longer, tmp_path / "longer", show_progress=False)
    assert row["steps"] == 4 and row["config"]["train"]["init_from"] == str(wd)
    wider = apply_overrides(longer, ["model.d_model=64"])
    with pytest.raises(ConfigError, match="do not have this model's shapes"):
        app.run(COPY, wider, tmp_path / "wider", show_progress=False)
    assert not (tmp_path / "wider" / "config.json").exists()  # nothing blocks the corrected command there
    with pytest.raises(ConfigError, match="no checkpoints"):
        app.run(COPY, apply_overrides(longer, [f"train.init_from={tmp_path}"]), tmp_path / "x", show_progress=False)


def test_a_ctrl_c_lost_in_a_callback_still_aborts_the_command(tmp_path):
    """A KeyboardInterrupt raised where Python cannot propagate it (a __del__ or a GC callback,
    as JAX's is) ends the command with "aborted" and exit 130, with no traceback."""
    code = (
        "import sys, cli\n"
        "sys.unraisablehook = cli._abort_on_lost_interrupt(sys.unraisablehook)\n"
        "class Lost:\n"
        "    def __del__(self):\n"
        "        raise KeyboardInterrupt\n"
        "Lost()\n"
        "print('trained on')\n"
    )
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert r.returncode == 130 and "aborted" in r.stderr, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "trained on" not in r.stdout
