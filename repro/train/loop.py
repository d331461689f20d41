"""The training loop: build, resume, train, evaluate, checkpoint, write results.

Everything a run produces lives in its workdir:

    config.json      the resolved Experiment (a rerun with a different config is refused)
    metrics.jsonl    one JSON object per logged step / evaluation
    checkpoints/     Orbax checkpoints (rerunning the same command resumes from the latest)
    results.json     final evaluation + provenance, written atomically at the end
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from repro import config as C
from repro.checkpoint import Checkpointer
from repro.eval.evaluate import evaluate
from repro.model import PerceiverAR, count_params
from repro.parallel import batch_sharding, make_mesh, replicated
from repro.runinfo import device_info, git_sha, now, versions, write_json_atomic
from repro.train.optim import make_optimizer
from repro.train.step import make_steps


class Dataset(Protocol):
    vocab_size: int

    def train_batch(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1): ...

    def eval_batches(self, num: int, batch_size: int): ...

    def data_hash(self, num_eval: int) -> str: ...


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class Run:
    """A built run: model graph, parameters, optimiser state and jitted steps."""

    exp: C.Experiment
    graphdef: Any
    params: Any
    opt_state: Any
    steps: Any
    mesh: Any
    num_params: int


def build(exp: C.Experiment) -> Run:
    mesh = make_mesh(exp.mesh)
    model = PerceiverAR(exp.model, rngs=nnx.Rngs(exp.train.seed))
    graphdef, params = nnx.split(model)
    tx = make_optimizer(exp.optim)
    params = jax.device_put(params, replicated(mesh))
    opt_state = jax.jit(tx.init, out_shardings=replicated(mesh))(params)
    return Run(exp, graphdef, params, opt_state, make_steps(exp, graphdef, tx, mesh), mesh, count_params(model))


def _check_workdir(workdir: Path, exp: C.Experiment) -> None:
    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            raise C.ConfigError(f"{cfg_path} is not valid JSON; use a fresh --workdir") from None
        new = C.experiment_to_dict(exp)
        # Only the step budget may change between a run and its resumption.
        strip = lambda d: {**d, "train": {k: v for k, v in d.get("train", {}).items() if k != "steps"}}
        if strip(json.loads(json.dumps(new))) != strip(old):
            raise C.ConfigError(
                f"{workdir} holds a run with a different config; pass another --workdir (or delete it)"
            )


def _read_metrics(path: Path, upto_step: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= upto_step]


def train(
    exp: C.Experiment,
    dataset: Dataset,
    workdir: Path,
    *,
    console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) ``exp`` in ``workdir``; returns the final results dict."""
    console = console or Console(stderr=True)
    workdir = Path(workdir)
    t, is_main = exp.train, jax.process_index() == 0
    workdir.mkdir(parents=True, exist_ok=True)
    _check_workdir(workdir, exp)
    if is_main:
        write_json_atomic(workdir / "config.json", C.experiment_to_dict(exp))

    run = build(exp)
    ckpt = Checkpointer(workdir, keep=t.keep_checkpoints)
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(start, {"params": run.params, "opt_state": run.opt_state})
        run.params, run.opt_state = state["params"], state["opt_state"]
        console.print(f"[bold]resuming[/] from step {start} in {workdir}")
    metrics_path = workdir / "metrics.jsonl"
    history = _read_metrics(metrics_path, start)
    if is_main:  # drop rows logged after the checkpoint we resumed from
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))

    data_sh = batch_sharding(run.mesh)
    pi, pc = jax.process_index(), jax.process_count()
    eval_bs = t.batch_size

    def global_batch(step: int):
        local = dataset.train_batch(step, t.batch_size, pi, pc)
        return {k: jax.make_array_from_process_local_data(data_sh, v) for k, v in local.items()}

    def run_eval() -> dict[str, float]:
        return evaluate(run.steps.eval, run.params, dataset.eval_batches(exp.data.eval_examples, eval_bs), eval_bs)

    def log(row: dict) -> None:
        history.append(row)
        if is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    console.print(
        f"[bold]{exp.section}/{exp.preset}[/] ({exp.scale}) {run.num_params:,} parameters, "
        f"context {exp.model.max_context}, {exp.model.num_latents} latents, {t.steps} steps"
    )
    step, stopped_early, last_eval = start, False, None
    t0, tokens_seen = time.perf_counter(), 0.0
    progress = Progress(
        TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=console, disable=not (show_progress and is_main),
    )  # fmt: skip
    with progress:
        task = progress.add_task("train", total=t.steps, completed=start, info="")
        while step < t.steps:
            batch = global_batch(step)
            run.params, run.opt_state, m = run.steps.train(run.params, run.opt_state, batch, np.int32(step))
            step += 1
            if step % t.log_every == 0 or step == t.steps:
                m = {k: float(v) for k, v in jax.device_get(m).items()}
                if not math.isfinite(m["loss"]):
                    raise TrainingDiverged(
                        f"loss is {m['loss']} at step {step}; the last good checkpoint is kept in {ckpt.dir}"
                    )
                tokens_seen += m["tokens"] * t.log_every
                elapsed = time.perf_counter() - t0
                log({"step": step, **m, "time": elapsed})
                progress.update(
                    task, info=f"loss {m['loss']:.4f}  acc {m['accuracy']:.3f}  {tokens_seen / elapsed:,.0f} tok/s"
                )
            if step % t.eval_every == 0 or step == t.steps:
                last_eval = run_eval()
                log({"step": step, **{f"eval/{k}": v for k, v in last_eval.items()}})
                acc = last_eval.get("scored_token_accuracy", last_eval["token_accuracy"])
                progress.console.print(
                    f"step {step:>6}: eval nats/token {last_eval['nats_per_token']:.4f}  accuracy {acc:.4f}"
                )
                if t.stop_at_accuracy and acc >= t.stop_at_accuracy:
                    stopped_early = True
            if step % t.checkpoint_every == 0 or step == t.steps or stopped_early:
                ckpt.save(step, {"params": run.params, "opt_state": run.opt_state})
            progress.update(task, completed=step)
            if stopped_early:
                break
    if last_eval is None:  # resumed at (or past) the end: evaluate the restored parameters
        last_eval = run_eval()
    ckpt.close()
    results = {
        "section": exp.section,
        "preset": exp.preset,
        "scale": exp.scale,
        "metrics": last_eval,
        "paper": [vars(p) for p in exp.paper],
        "steps": step,
        "stopped_early": stopped_early,
        "num_params": run.num_params,
        "train_seconds_this_session": time.perf_counter() - t0,
        "data_hash": dataset.data_hash(exp.data.eval_examples),
        "git_sha": git_sha(),
        "device": device_info(),
        "versions": versions(),
        "date": now(),
        "config": C.experiment_to_dict(exp),
    }
    if is_main:
        write_json_atomic(workdir / "results.json", results)
    return results
