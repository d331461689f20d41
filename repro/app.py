"""What the ``repro`` commands do, for any :class:`repro.section.Section` (``cli.py`` only parses).

Each function takes a section object, so a section defined anywhere (e.g. inside the test suite)
trains, evaluates and samples through exactly the code the CLI runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from repro.config import ConfigError, Experiment, experiment_from_dict
from repro.data.source import DataError
from repro.results import make_row, write_row
from repro.section import Section


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def source_for(section: Section, exp: Experiment, data_dir: Path | None = None, log: Callable | None = None):
    """The section's DocumentSource for ``exp``; bad data or config is a UserError (one line)."""
    try:
        return section.source(exp, data_dir, log=log)
    except (ValueError, DataError) as e:  # ConfigError and DataError are ValueErrors
        raise UserError(str(e)) from None


def pipeline_for(section: Section, exp: Experiment, data_dir: Path | None = None, log: Callable | None = None):
    source = source_for(section, exp, data_dir, log)
    try:
        pipe = section.pipeline(exp, source)
    except (ValueError, DataError) as e:
        raise UserError(str(e)) from None
    if log and not source.synthetic and source.vocab_size < exp.model.vocab_size:
        v = source.vocab_size
        log(f"note: model.vocab_size={exp.model.vocab_size} is larger than the data's vocabulary ({v} ids): "
            f"ids from {v} on are never targets and never sampled")  # fmt: skip
    return pipe


def resolve_for(section: Section, exp: Experiment, workdir: Path, data_dir: Path | None = None,
                log: Callable | None = None) -> Experiment:  # fmt: skip
    """``exp`` with its data made concrete (``data.corpus="auto"``: the user's prepared corpus,
    else the demo; ``repro.section.CorpusSection.resolve``). A run directory that already records
    its corpus (``config.json``, ``data.json``) keeps it: a resumed, evaluated or sampled run
    reads the data it was trained on."""
    corpus = getattr(exp.data, "corpus", None)
    if corpus == "auto":
        for name in ("config.json", "data.json"):
            try:
                d = json.loads((Path(workdir) / name).read_text())
                got = d["data"]["corpus"] if name == "config.json" else d["corpus"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(got, str) and got and got != "auto":
                return dataclasses.replace(exp, data=dataclasses.replace(exp.data, corpus=got))
    try:
        return section.resolve(exp, data_dir, log=log)
    except (ValueError, DataError) as e:
        raise UserError(str(e)) from None


def check_data(workdir: Path, source, action: str) -> None:
    """One UserError line when ``source`` is not the data the run in ``workdir`` was trained on."""
    from repro.data.store import check_run_data

    try:
        check_run_data(workdir, source.info, action)
    except DataError as e:
        raise UserError(str(e)) from None


def describe_data(source) -> str:
    """The line a command prints about its data: corpus, dataset, where, data hash."""
    info = source.info
    if not info.corpus:
        return f"data: {info.label}"
    return f"data: corpus '{info.corpus}' ({info.label}) in {info.path}, data hash {info.data_hash}"


def run(
    section: Section,
    exp: Experiment,
    workdir: Path,
    *,
    data_dir: Path | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    stage_root: Path | None = None,
) -> dict[str, Any]:
    """Train (or resume) ``exp``, evaluate it, write ``results.json``; returns the result row.

    A curriculum (``train.init_from="preset:NAME"``, see :func:`curriculum`) trains its earlier
    stages first, each in ``workdir/stages/<preset>`` (or ``stage_root/<preset>``: ``repro
    reproduce`` passes its runs directory, so a stage that is also a preset of the sweep trains
    once) and each started from the one before; a finished stage is not retrained, so rerunning
    the command resumes the chain where it stopped."""
    from repro.train.loop import train

    console = console or _stderr_console()
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    stages = curriculum(section, exp)
    prev, summaries = None, []
    for i, stage in enumerate(stages):
        wd = (Path(stage_root) if stage_root is not None else Path(workdir) / "stages") / stage.preset
        stage = resolve_for(section, stage, wd, data_dir, log)
        console.print(f"[bold]curriculum stage {i + 1}/{len(stages) + 1}[/]: {stage.preset} in {wd}", highlight=False)
        row = train(stage, pipeline_for(section, stage, data_dir, log=log), wd, section=section, console=console,
                    show_progress=show_progress, init_dir=prev, curriculum=list(summaries) or None)  # fmt: skip
        summaries.append({
            "preset": stage.preset,
            "workdir": os.path.relpath(wd, workdir),
            "seq_len": stage.model.max_context,
            "steps": row["steps"],
            "wall_seconds": row["wall_seconds"],
            "headline": row["headline"]["value"],
            "stopped_early": row.get("stopped_early", False),
        })  # fmt: skip
        prev = wd
    if stages:
        console.print(f"[bold]curriculum stage {len(stages) + 1}/{len(stages) + 1}[/]: {exp.preset} in {workdir}",
                      highlight=False)  # fmt: skip
    exp = resolve_for(section, exp, workdir, data_dir, log)
    pipe = pipeline_for(section, exp, data_dir, log=log)
    return train(exp, pipe, workdir, section=section, console=console, show_progress=show_progress, init_dir=prev,
                 curriculum=summaries or None)  # fmt: skip


def curriculum(section: Section, exp: Experiment) -> list[Experiment]:
    """The earlier stages of ``exp``, first stage first: ``train.init_from="preset:NAME"`` names
    the section preset this run starts from, which may itself name another. [] for a plain run."""
    chain, seen, cur = [], {exp.preset}, exp
    while (name := cur.train.init_preset) is not None:
        if name not in section.presets:
            raise UserError(f"train.init_from=preset:{name}: section {section.name} has no preset '{name}'")
        if name in seen:
            raise UserError(f"train.init_from=preset:{name}: the curriculum of {exp.preset} loops back to {name}")
        seen.add(name)
        cur = section.presets[name]
        chain.insert(0, cur)
    return chain


CHECKPOINTS = ("latest", "best")


def checkpoint_selector(checkpoint: str | int) -> str | int:
    """``latest``, ``best`` or a step number (an int, or a string of digits) of ``--checkpoint``."""
    if isinstance(checkpoint, str):
        c = checkpoint.strip().lower()
        if c in CHECKPOINTS:
            return c
        if c.isdigit():
            checkpoint = int(c)
    if isinstance(checkpoint, int) and not isinstance(checkpoint, bool) and checkpoint >= 1:
        return checkpoint
    raise UserError(f"--checkpoint must be latest, best or a step number >= 1, got '{checkpoint}'")


def _kept(steps) -> str:
    return ", ".join(map(str, sorted(steps))) or "none"


def load_run(section: Section, workdir: Path, checkpoint: str | int = "latest"):
    """(experiment, built run, restored params, step) of a run directory, read-only.

    ``checkpoint``: "latest" (the newest intact checkpoint; a damaged newest one is skipped with a
    warning), "best" (the best kept checkpoint by the section's headline metric in its direction,
    eval nats/token for a lower-is-better one: ``repro.checkpoint.BestBy``) or a kept step. A
    selector that names no kept checkpoint, or one that is damaged, is a UserError listing the
    kept steps."""
    import experiments  # noqa: F401 - registers every section's data config: config.json reads back into it
    from repro.checkpoint import BestBy, Checkpointer
    from repro.train.state import build

    selector = checkpoint_selector(checkpoint)
    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{workdir} is not a run directory (no config.json)")
    try:
        exp = experiment_from_dict(json.loads(cfg_path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path} is not a valid config: {e}") from None
    if exp.section != section.name:
        raise UserError(f"{workdir} holds a '{exp.section}' run, not '{section.name}'")
    if not (workdir / "checkpoints").is_dir():
        raise UserError(f"{workdir} has no checkpoint yet")
    from repro.checkpoint import restore_step, restore_verified
    from repro.train.loop import config_fingerprint

    # Read-only: never writes, never deletes (a run may be training); "best" as the run ranks it.
    ckpt = Checkpointer(workdir, read_only=True, best=BestBy.headline(section.headline))
    try:
        if ckpt.latest_step() is None:
            raise UserError(f"{workdir} has no checkpoint yet")
        r = build(exp, init=False)
        if selector == "latest":
            console = _stderr_console()
            warn = lambda m: console.print(f"warning: {m}", highlight=False)  # noqa: E731
            step, state, _ = restore_verified(ckpt, r.abstract, config_fingerprint(exp), warn=warn)
            if not step:
                raise UserError(f"{workdir}: no intact checkpoint (every one failed to restore or verify)")
        else:
            kept = ckpt.all_steps()
            step = ckpt.best_step() if selector == "best" else selector
            if step is None:
                raise UserError(f"--checkpoint best: no kept checkpoint of {workdir} has an eval score "
                                f"(kept steps: {_kept(kept)}); pass latest or a step")  # fmt: skip
            if step not in kept:
                raise UserError(f"--checkpoint {step}: {workdir} keeps no checkpoint at that step "
                                f"(kept steps: {_kept(kept)})")  # fmt: skip
            state, _, err = restore_step(ckpt, step, r.abstract, config_fingerprint(exp))
            if state is None:
                raise UserError(f"--checkpoint {selector}: the checkpoint at step {step} in {ckpt.dir} is damaged "
                                f"({type(err).__name__}: {str(err)[:120]}); kept steps: {_kept(kept)}")  # fmt: skip
    except ConfigError as e:
        raise UserError(str(e)) from None
    finally:
        ckpt.close()
    return exp, r, state["params"], step


def evaluate_run(
    section: Section,
    workdir: Path,
    *,
    protocol: str | None = None,
    split: str | None = None,
    max_examples: int | None = None,
    data_dir: Path | None = None,
    show_progress: bool = True,
    console: Console | None = None,
    checkpoint: str | int = "latest",
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint of ``workdir`` (``checkpoint``: latest, best or a step, see
    :func:`load_run`) under ``protocol`` (default: the section's) on ``split`` (default: the
    run's); writes ``<workdir>/evals/<split>_<protocol>.json``, or ``..._step<N>.json`` for a
    checkpoint asked by ``best`` or its step (so it never replaces the latest one's row). The row
    records the scored step (``steps``), the selector asked (``checkpoint``) and the documents
    scored (``metrics.eval_documents``): as many as training evaluates (``data.eval_examples``,
    0 = the whole split; ``repro.eval.evaluate.eval_document_count``, the rule ``repro run``
    uses), or the split's first ``max_examples``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from repro.data.tokens import PAD_ID
    from repro.eval import cached
    from repro.eval.evaluate import eval_document_count, evaluate

    console = console or _stderr_console()
    if max_examples is not None and max_examples < 1:
        raise UserError(f"--max-examples must be >= 1, got {max_examples}")
    from repro.data.source import SPLITS

    if split is not None and split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got '{split}'")
    selector = checkpoint_selector(checkpoint)
    exp, r, params, step = load_run(section, workdir, selector)
    split = split or exp.data.eval_split
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    exp = resolve_for(section, exp, workdir, data_dir, log)
    pipe = pipeline_for(section, exp, data_dir)
    check_data(workdir, pipe.source, "evaluate")
    bs = exp.train.batch_size
    protocol = protocol or section.default_protocol(exp)
    num = eval_document_count(exp, pipe.source, max_examples)
    eval_step = r.steps.eval
    try:
        if cached.is_cached(protocol):  # scored through the sampler's KV cache (repro/eval/cached.py)
            batches, eval_step = cached.setup(
                exp.model, r.graphdef, pipe.source.eval_documents(split, num), protocol, bs,
                max_examples=max_examples, bits_per_dim=section.bits_per_dim(exp),
            )  # fmt: skip
        else:
            batches = pipe.eval_batches(
                split, num, bs, protocol, max_examples=max_examples, bits_per_dim=section.bits_per_dim(exp)
            )
    except (ValueError, DataError) as e:
        raise UserError(str(e)) from None
    log(describe_data(pipe.source))  # once the options are known good (a bad one is the only line)
    progress = Progress(
        TextColumn("[bold blue]eval"), BarColumn(), MofNCompleteColumn(), TextColumn("windows  {task.fields[info]}"),
        TimeRemainingColumn(), console=console, disable=not show_progress,
    )  # fmt: skip
    info = batches.info
    done = {"docs": set(), "targets": 0}

    def advance(b):
        done["docs"].update(b["seq_id"].tolist())
        done["targets"] += int((b["targets"] != PAD_ID).sum())
        progress.update(
            task, advance=len(b["inputs"]),
            info=f"{len(done['docs'])}/{info['documents']} documents, {done['targets']:,}/{info['targets']:,} targets",
        )  # fmt: skip

    with progress:
        task = progress.add_task("eval", total=info["windows"], info="")
        metrics = evaluate(eval_step, params, batches, bs, info=batches.info, on_batch=advance)
    # The baselines score exactly the model's targets: the same first documents of the split.
    baselines = section.baselines(exp, pipe.source, split, info["documents"] if not pipe.source.synthetic else None)
    row = make_row(
        kind="eval", exp=exp, section=section, dataset=pipe.source.info, split=split, metrics=metrics, steps=step,
        num_params=r.num_params, baselines=baselines,
        extra={"max_examples": max_examples, "data_hash": pipe.source.data_hash(split, num),
               "checkpoint": str(selector)},
    )  # fmt: skip
    suffix = "" if selector == "latest" else f"_step{step}"
    path = Path(workdir) / "evals" / f"{split}_{metrics['protocol'].replace(':', '_')}{suffix}.json"
    write_row(path, row)
    return row, path


def sample_run(
    section: Section,
    workdir: Path,
    *,
    prompt: str | None = None,
    num: int = 8,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    fill: int = 0,
    data_dir: Path | None = None,
    checkpoint: str | int = "latest",
) -> tuple[dict[str, Any], Path]:
    """Generate from a checkpoint (``checkpoint``: latest, best or a step, see :func:`load_run`)
    with the KV cache and the section's sampling spec (positions of generated tokens, allowed
    tokens per position); writes ``<workdir>/samples/`` (``samples/step<N>/`` for a checkpoint
    asked by ``best`` or its step)."""
    from flax import nnx

    from repro.sample.sampler import SampleConfig, generate, vocabulary_limit

    if num < 1:
        raise UserError(f"--num must be >= 1, got {num}")
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise UserError(f"--top-k must be >= 0 (0 = off), got {top_k}")
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    if not 0 <= seed < 2**32:
        raise UserError(f"--seed must be in [0, 2^32), got {seed}")
    selector = checkpoint_selector(checkpoint)
    exp, r, params, step = load_run(section, workdir, selector)
    M = exp.model.num_latents
    if not 0 <= fill < M:
        raise UserError(f"--fill must be in [0, num_latents={M}) (0 = num_latents / 2), got {fill}")
    spec = section.sampling(exp)
    cfg = dataclasses.replace(SampleConfig(), **spec.defaults)
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    cfg = dataclasses.replace(cfg, seed=seed, reset_fill=fill or cfg.reset_fill,
                              **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    console = _stderr_console()
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    exp = resolve_for(section, exp, workdir, data_dir, log)
    source = source_for(section, exp, data_dir, log)  # prompts need documents, not training batches
    check_data(workdir, source, "sample from")
    if source.vocab_size > exp.model.vocab_size:
        raise UserError(f"the data's vocabulary ({source.vocab_size} ids) is larger than the model's (model."
                        f"vocab_size={exp.model.vocab_size}): not the data this model was trained on")  # fmt: skip
    try:
        prompts = section.prompts(exp, source, num, prompt)
    except (ValueError, DataError) as e:
        raise UserError(str(e)) from None
    log(describe_data(source))  # once the prompts are known good (a bad one is the only line)
    model = nnx.merge(r.graphdef, params)
    # Never an id the data's tokenizer cannot decode: the model's extra output ids are masked.
    allowed = vocabulary_limit(spec.allowed, source.vocab_size, exp.model.vocab_size)
    try:
        result = generate(model, prompts.tokens, prompts.num_new, cfg, positions_fn=spec.positions_fn,
                          allowed=allowed)  # fmt: skip
    except ValueError as e:
        raise UserError(str(e)) from None
    settings = {**dataclasses.asdict(cfg), "checkpoint_step": step, "checkpoint": str(selector)}
    outdir = Path(workdir) / "samples" / ("" if selector == "latest" else f"step{step}")
    summary = section.write_samples(exp, prompts, result.generated, outdir, settings)
    pngs = sorted(outdir.glob("*.png"))
    if pngs and exp.train.tensorboard:  # image grids, piano rolls: beside the run's curves
        from repro.train.tboard import TBLog

        tb = TBLog(workdir, enabled=True)
        try:
            tb.images("samples", pngs, step)
        finally:
            tb.close()
    return summary, outdir


def check_config(exp: Experiment) -> Experiment:
    try:
        return exp.validate()
    except ConfigError as e:
        raise UserError(str(e)) from None
