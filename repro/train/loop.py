"""The training loop (:func:`train`): resume (or start), run the steps, finish.

Before the first step, the run is built (``repro.train.state.build``), its state restored from
the newest good checkpoint or initialised (:func:`_resume`), and how it evaluates resolved once
(:class:`EvalPlan`: split and documents, protocol, cadence, headline, stop rule, best-checkpoint
rule). A :class:`_Session` then runs the steps, logging, evaluating, checking and checkpointing
where a step is due, and finishes with the result row.

Everything a run produces lives in its workdir:

    config.json      the resolved Experiment (a rerun with a different config is refused)
    data.json        the prepared corpus it trains on and its data hash (resume, eval and sample
                     refuse a store that was prepared again with other data)
    metrics.jsonl    one JSON object per logged step / evaluation
    checkpoints/     Orbax checkpoints (rerunning the same command resumes from the latest)
    results.json     final evaluation + provenance, written atomically at the end

Multi-process: every process runs this same function; each reads only its block of every
global batch (``Pipeline.train_batch(step, B, block, blocks)``, prepared ahead on a thread),
the global batch is assembled with ``jax.make_array_from_process_local_data``, every process
takes part in checkpointing, and only process 0 writes config.json, metrics.jsonl, results.json and console output.

Ending early: a non-finite loss / gradient / parameter raises :class:`TrainingDiverged` with the
first bad step (the state is checked before every log line and every checkpoint, so no bad state
is ever saved). SIGINT (Ctrl-C) or SIGTERM (preemption) saves a checkpoint at the current step
and raises :class:`TrainingInterrupted` (the CLI exits with 130); a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from repro import config
from repro.checkpoint import BestBy, Checkpointer, restore_verified, state_checksum
from repro.data.pipeline import Pipeline, Prefetcher
from repro.data.store import check_run_data, record_run_data
from repro.eval.evaluate import eval_document_count, evaluate
from repro.parallel import batch_sharding, describe, process_batch_block
from repro.results import make_row, read_row, write_row
from repro.runinfo import git_sha, write_json_atomic
from repro.train.errors import TrainingDiverged, TrainingInterrupted
from repro.train.optim import learning_rate_schedule
from repro.train.runlog import RunLog, read_metrics
from repro.train.state import Run, build
from repro.train.tboard import TBLog

if TYPE_CHECKING:
    from repro.data.source import DatasetInfo, DocumentSource
    from repro.section import Metric, Section

__all__ = ["EvalPlan", "TrainingDiverged", "TrainingInterrupted", "config_fingerprint", "train"]


# Config sections that may differ between a run and its resumption: the step budget, the
# mesh (Orbax restores into the new shardings, e.g. a run moved to a different pod size), and
# whether TensorBoard files are written (dropped from the comparison and the fingerprint, so a
# run directory whose config.json predates train.tensorboard resumes, and its checkpoints'
# fingerprints are unchanged).
_RESUMABLE_CHANGES = {"train": ("steps", "tensorboard"), "mesh": None}


def _comparable(d: dict) -> dict:
    out = dict(d)
    for sec, keys in _RESUMABLE_CHANGES.items():
        if keys is None:
            out.pop(sec, None)
        else:
            out[sec] = {k: v for k, v in out.get(sec, {}).items() if k not in keys}
    return out


def config_fingerprint(exp: config.Experiment) -> str:
    """sha256 of the config minus what may change on resume (step budget, mesh): checkpoints
    record it, so a checkpoint is never restored into another config, config.json or not."""
    d = _comparable(json.loads(json.dumps(config.experiment_to_dict(exp))))
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _check_workdir(workdir: Path, exp: config.Experiment) -> None:
    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise config.ConfigError(f"{cfg_path} is not valid JSON; use a fresh --workdir") from None
        if not isinstance(old, dict) or not all(isinstance(old.get(k, {}), dict) for k in ("train", "mesh")):
            raise config.ConfigError(f"{cfg_path} is not a run config; use a fresh --workdir")
        new = json.loads(json.dumps(config.experiment_to_dict(exp)))
        if _comparable(new) != _comparable(old):
            raise config.ConfigError(
                f"{workdir} holds a run with a different config; pass another --workdir (or delete it)"
            )


class _StopRequest:
    """Turns SIGINT / SIGTERM into a flag checked between steps (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._critical = 0  # > 0 while a checkpoint is being written
        self._abort_pending = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            if self._critical:  # a second Ctrl-C while a checkpoint is written: abort right after it
                self._abort_pending = True
                return
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        self.signum = signum

    @contextlib.contextmanager
    def critical(self):
        """A checkpoint write: a second Ctrl-C waits for it to finish (an interrupted Orbax save
        would leave its writer threads printing tracebacks), then aborts."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._abort_pending and not self._critical:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


@jax.jit
def _track_first_bad(first_bad, finite, step):
    """Device-side: the first step whose state was non-finite (-1 = none), without a host sync."""
    return jnp.where((first_bad < 0) & ~finite, step, first_bad)


@dataclass(frozen=True)
class EvalPlan:
    """How training evaluates, resolved once before the first step: the first ``documents`` of
    ``split`` (0 = all: :func:`repro.eval.evaluate.eval_document_count`, the rule ``repro eval``
    shares) under ``protocol``, every ``every`` steps and at the last; the headline it prints,
    the section's stop rule and the best-checkpoint rule (``keep_best``: evaluated steps are
    saved too, so the best one can be kept)."""

    split: str
    documents: int
    protocol: str
    bits_per_dim: bool
    batch_size: int
    every: int
    last_step: int
    headline: Metric
    stop_rule: Callable[[dict[str, Any]], bool]
    best: BestBy
    keep_best: bool

    @classmethod
    def of(cls, section: Section, exp: config.Experiment, source: DocumentSource) -> EvalPlan:
        t = exp.train
        return cls(
            split=exp.data.eval_split, documents=eval_document_count(exp, source),
            protocol=section.default_protocol(exp), bits_per_dim=section.bits_per_dim(exp), batch_size=t.batch_size,
            every=t.eval_every, last_step=t.steps, headline=section.headline,
            stop_rule=functools.partial(section.stop, exp), best=BestBy.headline(section.headline),
            keep_best=t.keep_best_checkpoints > 0,
        )  # fmt: skip

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.last_step

    def evaluate(self, dataset: Pipeline, run: Run) -> dict[str, Any]:
        batches = dataset.eval_batches(
            self.split, self.documents, self.batch_size, self.protocol, bits_per_dim=self.bits_per_dim
        )
        return evaluate(run.steps.eval, run.params, batches, self.batch_size)


def train(
    exp: config.Experiment,
    dataset: Pipeline,
    workdir: Path,
    *,
    section: Section | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    prefetch: int = 2,
    init_dir: Path | None = None,
    curriculum: list[dict] | None = None,
) -> dict[str, Any]:
    """Train (or resume) ``exp`` on ``dataset`` (the section's :class:`Pipeline`) in ``workdir``;
    returns the final result row (``repro/results.py``). ``section``: the
    :class:`repro.section.Section` (default: the one named ``exp.section``). ``init_dir``: the
    run directory a ``train.init_from="preset:NAME"`` run starts from (its earlier stage, trained
    by ``repro.app.run``); ``curriculum``: those stages' summaries, for the result row.

    Resume (or start), run the steps, finish: evaluate if no step did, write the result row."""
    if section is None:
        from experiments import SECTIONS

        section = SECTIONS[exp.section]
    is_main = jax.process_index() == 0
    console = console or Console(stderr=True)
    if not is_main:
        console = Console(stderr=True, quiet=True)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    git_sha()  # the code this run starts with is what its result row names (repro/runinfo.py)
    with _workdir_lock(workdir, is_main):
        _check_workdir(workdir, exp)
        run = build(exp, init=False)
        plan = EvalPlan.of(section, exp, dataset.source)
        ckpt = Checkpointer(workdir, keep=exp.train.keep_checkpoints, keep_best=exp.train.keep_best_checkpoints,
                            best=plan.best)  # fmt: skip
        try:
            init = _init_params(run, ckpt, init_dir, console)
            _record_run(workdir, exp, dataset.source.info, ckpt, is_main)
            fingerprint = config_fingerprint(exp)
            start, finished = _resume(run, ckpt, workdir, fingerprint, init, console)
            if finished is not None:
                return finished
            session = _Session(section, dataset, workdir, run, ckpt, plan, fingerprint, start, console, is_main,
                               show_progress)  # fmt: skip
            step = session.run_steps(prefetch)
            return session.finish(step, curriculum)
        finally:
            ckpt.close()


def _warn(console: Console, message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", highlight=False)


def _init_params(run: Run, ckpt: Checkpointer, init_dir: Path | None, console: Console) -> tuple[Any, int] | None:
    """``train.init_from``'s parameters and step for a run without a checkpoint yet, else None.
    Read before config.json is written: a bad source leaves nothing that would block the
    corrected command in the same workdir."""
    t = run.exp.train
    if not t.init_from or ckpt.latest_step() is not None:
        return None
    if t.init_preset is not None and init_dir is None:
        raise config.ConfigError(f"train.init_from={t.init_from} is a curriculum stage: `repro run` trains "
                                 f"preset {t.init_preset} first")  # fmt: skip
    src = Path(init_dir) if init_dir is not None else Path(t.init_from)
    return _params_from(src, run, lambda m: console.print(f"[yellow]warning:[/] {m}"))


def _record_run(workdir: Path, exp: config.Experiment, info: DatasetInfo, ckpt: Checkpointer, is_main: bool) -> None:
    """config.json and data.json (process 0). A run resumes only on the data it was trained on
    (the store may have been prepared again since, e.g. with another tokenizer): one line,
    nothing written."""
    if ckpt.latest_step() is not None:
        check_run_data(workdir, info, "resume")
    if is_main:
        write_json_atomic(workdir / "config.json", config.experiment_to_dict(exp))
        if info.manifest_hash:
            record_run_data(workdir, info)


def _resume(run: Run, ckpt: Checkpointer, workdir: Path, fingerprint: str, init: tuple[Any, int] | None,
            console: Console) -> tuple[int, dict[str, Any] | None]:  # fmt: skip
    """The step this session starts at, ``run``'s state restored from the newest good checkpoint
    or initialised (fresh, or from ``init``: ``train.init_from``'s parameters and step); and the
    recorded result row of a run that is already finished there (nothing to do), else None."""
    t = run.exp.train
    start, state, meta = restore_verified(ckpt, run.abstract, fingerprint, warn=functools.partial(_warn, console))
    if not start:
        fresh = build(run.exp, mesh=run.mesh)
        run.params, run.opt_state = fresh.params, fresh.opt_state
        if init is not None:
            src_params, init_step = init
            run.params = _grow_into(run.params, src_params, t.init_positions)
            console.print(f"[bold]initialised[/] from {t.init_from} (its step {init_step}): parameters only, "
                          "fresh optimiser state, step 0", highlight=False)  # fmt: skip
        return start, None
    run.params, run.opt_state = state["params"], state["opt_state"]
    if meta.get("data_position", start) != start:
        raise RuntimeError(f"checkpoint {start} records data position {meta['data_position']}")
    finished = start >= t.steps or (meta.get("stopped_early") and meta.get("train_steps") == t.steps)
    row = _recorded_row(workdir / "results.json") if finished else None
    if row is not None and row.get("steps") == start:
        console.print(f"[bold]finished[/]: {workdir} already holds this run's result at step {start} "
                      f"(pass a larger --steps to train on)", highlight=False)  # fmt: skip
        return start, row
    console.print(f"[bold]resuming[/] from step {start} in {workdir}")
    return start, None


def _recorded_row(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return read_row(path)
    except ValueError:
        return None


class _workdir_lock:
    """One writer per run directory: an exclusive ``fcntl`` lock on ``<workdir>/.lock`` held while
    training (process 0 of a multi-process run); a second ``repro run`` on the same directory
    stops at once with one line. The kernel drops the lock when the process dies, even by SIGKILL."""

    def __init__(self, workdir: Path, enabled: bool = True):
        self.path, self.enabled, self.fd = workdir / ".lock", enabled, None

    def __enter__(self):
        if self.enabled:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.fd)
                raise config.ConfigError(f"another `repro run` is training in {self.path.parent}; wait for it "
                                         "(or stop it) and rerun") from None  # fmt: skip
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        return False


def _params_from(src: Path, run: Run, warn) -> tuple[Any, int]:
    """The parameters of the newest good checkpoint in run directory ``src`` (``train.init_from``)
    restored into this run's shardings, and its step. They have this run's shapes, except that a
    learned position table may have fewer rows (a shorter curriculum stage): :func:`_grow_into`
    completes it."""
    if not (src / "checkpoints").is_dir():
        raise config.ConfigError(f"train.init_from={src}: no checkpoints/ there (a run directory of `repro run`)")
    like = run.abstract
    import experiments  # noqa: F401 - registers every section's data config: config.json reads back into it

    try:  # the source's own shapes, from its config.json (its position tables may be smaller)
        src_exp = config.experiment_from_dict(json.loads((src / "config.json").read_text()))
        src_abstract = build(dataclasses.replace(src_exp, mesh=run.exp.mesh), mesh=run.mesh, init=False).abstract
    except (OSError, ValueError, TypeError, KeyError):
        src_abstract = None
    if src_abstract is not None and _growable(src_abstract["params"], like["params"]):
        like = src_abstract
    other = Checkpointer(src, read_only=True)
    try:
        step, state, _ = restore_verified(other, like, None, warn=warn)
    except config.ConfigError:
        raise config.ConfigError(f"train.init_from={src}: its parameters do not have this model's shapes "
                                 "(only learned position tables may grow)") from None  # fmt: skip
    finally:
        other.close()
    if not step:
        raise config.ConfigError(f"train.init_from={src}: no checkpoint could be restored")
    return state["params"], step


def _is_position_table(path) -> bool:
    return any(getattr(k, "key", None) == "pos_tables" for k in path)


def _growable(src_params, params) -> bool:
    """Same tree; every leaf the same shape, or a learned position table with fewer rows."""
    a = jax.tree_util.tree_flatten_with_path(src_params)
    b = jax.tree_util.tree_flatten_with_path(params)
    if a[1] != b[1]:
        return False
    for (path, x), (_, y) in zip(a[0], b[0], strict=True):
        if x.shape != y.shape and not (
            _is_position_table(path) and x.ndim == y.ndim and x.shape[1:] == y.shape[1:] and x.shape[0] < y.shape[0]
        ):
            return False
    return True


def _grow_into(fresh, src, how: str = "extend"):
    """``src``'s parameters where shapes match. A position table with fewer rows (``train.
    init_positions``): "extend" fills this run's first rows with it and keeps the fresh
    initialisation of the rest (positions the source never saw); "nearest" / "linear" read row i
    from the source's table at ``s = i * (n_src - 1) / (n - 1)``: its nearest row (half-way
    rounds to even) or the linear mix of the rows on either side."""

    def one(f, x):
        if f.shape == x.shape:
            return x
        x = x.astype(f.dtype)
        s = np.arange(f.shape[0]) * (x.shape[0] - 1) / max(f.shape[0] - 1, 1)
        if how == "nearest":
            grown = jnp.take(x, jnp.asarray(np.rint(s).astype(np.int32)), axis=0)
        elif how == "linear":
            lo = np.minimum(np.floor(s).astype(np.int32), x.shape[0] - 2)
            w = jnp.asarray((s - lo)[:, None], f.dtype)
            grown = (1 - w) * jnp.take(x, jnp.asarray(lo), axis=0) + w * jnp.take(x, jnp.asarray(lo + 1), axis=0)
        else:
            grown = jnp.concatenate([x, f[x.shape[0] :]], axis=0)
        return jax.device_put(grown, f.sharding)

    return jax.tree.map(one, fresh, src)


class _Bar:
    """The training progress bar (off unless shown on process 0)."""

    def __init__(self, console: Console, total: int, completed: int, enabled: bool):
        self.total, self.completed = total, completed
        self.progress = Progress(
            TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=console, disable=not enabled,
        )  # fmt: skip

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.total, completed=self.completed, info="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def info(self, text: str) -> None:
        self.progress.update(self.task, info=text)

    def done(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def print(self, line: str) -> None:
        self.progress.console.print(line, highlight=False)


class _Session:
    """One session of a run, from the step it resumed at: the steps with their logging (metrics.
    jsonl from ``start`` on, TensorBoard), evaluations, checks and checkpoints, then the result
    row. Only process 0 writes logs, results and console output."""

    def __init__(self, section: Section, dataset: Pipeline, workdir: Path, run: Run, ckpt: Checkpointer,
                 plan: EvalPlan, fingerprint: str, start: int, console: Console, is_main: bool,
                 show_progress: bool):  # fmt: skip
        self.exp, self.t = run.exp, run.exp.train
        self.section, self.dataset, self.workdir, self.run = section, dataset, workdir, run
        self.ckpt, self.plan, self.fingerprint, self.start = ckpt, plan, fingerprint, start
        self.console, self.is_main = console, is_main
        self.processes = jax.process_count()
        self.runlog = RunLog(workdir / "metrics.jsonl", enabled=is_main)
        history = read_metrics(self.runlog.path, warn=functools.partial(_warn, console))
        if history and is_main:
            self.runlog.resume(start)  # rows the interrupted session logged after `start` are superseded
        self.history = [r for r in history if r.get("step", 0) <= start]
        self.tb = TBLog(workdir, enabled=is_main and self.t.tensorboard, resume_step=start)
        self.lr_at = learning_rate_schedule(self.exp.optim)
        self.data_sh = batch_sharding(run.mesh)
        self.block, self.blocks = process_batch_block(self.data_sh, self.t.batch_size)
        self.bar = _Bar(console, self.t.steps, start, show_progress and is_main)
        self.first_bad = jnp.int32(-1)  # on device: the first step whose state was non-finite (-1 = none)
        self.stopped_early, self.last_eval = False, None
        self.t0, self.tokens_seen, self.last_log_step = time.perf_counter(), 0.0, start

    def run_steps(self, prefetch: int) -> int:
        """Train from ``start`` to ``train.steps`` or an early stop; returns the last step. A stop
        request (SIGINT / SIGTERM) saves a checkpoint, then raises TrainingInterrupted."""
        self._announce()
        step, self.t0 = self.start, time.perf_counter()
        prefetcher = Prefetcher(self._host_batch, step, self.t.steps, depth=prefetch) if prefetch > 0 else None
        try:
            with self.bar, _StopRequest() as stop:
                while step < self.t.steps:
                    local = prefetcher.get(step) if prefetcher else self._host_batch(step)
                    m = self._train_step(step, local)
                    step += 1
                    self._after_step(step, m, stop)
                    if self.stopped_early:
                        break
        finally:
            self.tb.close()
            if prefetcher:
                prefetcher.close()
        return step

    def _announce(self) -> None:
        exp, run = self.exp, self.run
        self.console.print(
            f"[bold]{exp.section}/{exp.preset}[/] ({exp.scale}) {run.num_params:,} parameters, "
            f"context {exp.model.max_context}, {exp.model.num_latents} latents, {self.t.steps} steps, "
            f"mesh {describe(run.mesh)}, {self.processes} process(es), compute {exp.model.resolved_dtype()}, "
            f"attention {exp.model.resolved_attention()}" + (", remat" if exp.model.remat else "")
        )
        info = self.dataset.source.info
        self.console.print(f"data: corpus '{info.corpus}' ({info.label}) in {info.path}, data hash {info.data_hash}"
                           if info.corpus else f"data: {info.label}", highlight=False)  # fmt: skip

    def _host_batch(self, step: int) -> dict[str, np.ndarray]:
        return self.dataset.train_batch(step, self.t.batch_size, self.block, self.blocks)

    def _train_step(self, step: int, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Step ``step`` -> ``step + 1`` on the global batch assembled from every process's block."""
        batch = {k: jax.make_array_from_process_local_data(self.data_sh, v) for k, v in local.items()}
        run = self.run
        run.params, run.opt_state, m = run.steps.train(run.params, run.opt_state, batch, np.int32(step))
        self.first_bad = _track_first_bad(self.first_bad, m["finite"], np.int32(step + 1))
        return m

    def _after_step(self, step: int, m: dict[str, jax.Array], stop: _StopRequest) -> None:
        """Log, evaluate and checkpoint where ``step`` is due; a stop request saves, then raises."""
        t = self.t
        is_log = step % t.log_every == 0 or step == t.steps
        # Multi-process: agree on a stop request at log steps only (one collective per log).
        stop_now = self._agree(stop.signum is not None) if (self.processes == 1 or is_log) else False
        if is_log:
            self._log(step, m)
        eval_now = self._evaluate(step) if self.plan.due(step) else None
        # Evaluated steps are saved too (when keeping the best), so the best can be kept.
        best_candidate = eval_now is not None and self.plan.keep_best
        if step % t.checkpoint_every == 0 or step == t.steps or self.stopped_early or stop_now or best_candidate:
            self._check_finite(step)
            with stop.critical():
                self._save(step, eval_now)
        self.bar.done(step)
        if stop_now:
            name = signal.Signals(stop.signum).name if stop.signum else "a stop request on another process"
            raise TrainingInterrupted(f"interrupted by {name} at step {step}: checkpoint saved in {self.ckpt.dir}; "
                                      "rerun the same command to resume", step)  # fmt: skip

    def _append(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        self.runlog.append(row)

    def _log(self, step: int, m: dict[str, jax.Array]) -> None:
        self._check_finite(step)
        m = {k: float(v) for k, v in jax.device_get(m).items() if k != "finite"}
        # Tokens since the last log: the logged step's count times the steps in between.
        self.tokens_seen += m["tokens"] * (step - self.last_log_step)
        self.last_log_step = step
        elapsed = time.perf_counter() - self.t0
        self._append({"step": step, **m, "time": elapsed})
        self.tb.scalars("train", {"loss": m["loss"], "lr": float(self.lr_at(step - 1)), "grad_norm": m["grad_norm"],
                                  "tokens_per_second": self.tokens_seen / elapsed, "accuracy": m["accuracy"]},
                        step)  # fmt: skip
        self.bar.info(f"loss {m['loss']:.4f}  {self.tokens_seen / elapsed:,.0f} tok/s")

    def _evaluate(self, step: int) -> dict[str, Any]:
        self._check_finite(step)
        ev = self.last_eval = self.plan.evaluate(self.dataset, self.run)
        self._append({"step": step, **{f"eval/{k}": v for k, v in ev.items()}})
        self.tb.scalars(f"eval/{ev.get('protocol') or self.plan.protocol}", ev, step)
        h = self.plan.headline
        value = h.format(ev.get(h.key))
        self.bar.print(f"step {step:>6}: eval nats/token {ev['nats_per_token']:.4f}  {h.label} {value}")
        self.stopped_early = self.plan.stop_rule(ev)
        return ev

    def _save(self, step: int, eval_metrics: dict[str, Any] | None) -> None:
        t, exp = self.t, self.exp
        meta = {
            "rng": f"dropout key = fold_in(key(train.seed={t.seed}), step); "
            f"batch = f(data.train_seed={exp.data.train_seed}, step)",
            "seed": t.seed,
            "data_seed": exp.data.train_seed,
            "mesh": describe(self.run.mesh),
            "processes": self.processes,
            "config_sha256": self.fingerprint,
            "train_steps": t.steps,
            "stopped_early": bool(self.stopped_early),
            "state_checksum": state_checksum(self.run.state()),
        }
        metrics = self.plan.best.metrics(eval_metrics) if eval_metrics else None
        self.ckpt.save(step, self.run.state(), meta, metrics)

    def _check_finite(self, step: int) -> None:
        """TrainingDiverged if a step so far left a non-finite state (checked before every log
        line, evaluation and checkpoint: no bad state is ever saved)."""
        bad = int(self.first_bad)
        if bad >= 0:
            last = self.ckpt.latest_step()
            kept = f"the last good checkpoint (step {last}) is kept" if last else "no checkpoint had been saved"
            raise TrainingDiverged(f"non-finite loss, gradient or parameter at step {bad} (checked at step {step}); "
                                   f"training stopped; {kept} in {self.ckpt.dir}", bad)  # fmt: skip

    def _agree(self, flag: bool) -> bool:
        """True on every process when it is true on any."""
        if self.processes == 1:
            return flag
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))

    def finish(self, step: int, curriculum: list[dict] | None) -> dict[str, Any]:
        """The run's result row at ``step`` (written to results.json by process 0), from the last
        evaluation, or one of the restored parameters when no step ran (resumed at the end)."""
        ev = self.last_eval if self.last_eval is not None else self.plan.evaluate(self.dataset, self.run)
        exp, src, split = self.exp, self.dataset.source, self.plan.split
        baselines = self.section.baselines(exp, src, split)
        wall = sum(r.get("time", 0.0) for r in _session_ends(self.history))
        results = make_row(
            kind="train", exp=exp, section=self.section, dataset=src.info, split=split, metrics=ev, steps=step,
            num_params=self.run.num_params, tokens_seen=_tokens_seen(self.history), wall_seconds=wall,
            baselines=baselines,
            extra={
                "stopped_early": self.stopped_early,
                "best_checkpoint_step": self.ckpt.best_step(),
                "train_seconds_this_session": time.perf_counter() - self.t0,
                "data_hash": src.data_hash(split, self.plan.documents),
                "mesh": describe(self.run.mesh),
                **_curriculum_totals(curriculum, step, wall),
            },
        )  # fmt: skip
        if self.is_main:
            write_row(self.workdir / "results.json", results)
        return results


def _curriculum_totals(stages: list[dict] | None, steps: int, wall: float) -> dict[str, Any]:
    """A curriculum run's row: its earlier stages and the whole chain's steps and wall time."""
    if not stages:
        return {}
    return {
        "curriculum": stages,
        "curriculum_steps": sum(s["steps"] for s in stages) + int(steps),
        "curriculum_wall_seconds": sum(s["wall_seconds"] or 0.0 for s in stages) + wall,
    }


def _session_ends(history: list[dict]) -> list[dict]:
    """The last logged training row of each session (``time`` restarts at 0 in a new session)."""
    rows = [r for r in history if "time" in r]
    return [r for i, r in enumerate(rows) if i + 1 == len(rows) or rows[i + 1]["time"] < r["time"]]


def _tokens_seen(history: list[dict]) -> float:
    """Training target tokens over the whole run, from the logged rows (each row's count times
    the steps since the previous logged row)."""
    total, prev = 0.0, 0
    for r in history:
        if "tokens" in r and "step" in r:
            total += r["tokens"] * (r["step"] - prev)
            prev = r["step"]
    return total
