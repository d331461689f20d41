"""The ``repro`` command line: parsing and dispatch only; the work is in ``repro/`` and ``experiments/``.

repro list                                    sections and presets
repro run SECTION [--preset P] [--set k=v ...] [--workdir D] [--steps N] [--data-dir D]
repro eval SECTION --workdir D [--checkpoint latest|best|STEP] [--protocol stride1|blocked:B|cached:F] [--split S] ...
repro sample SECTION --workdir D [--checkpoint C] [--prompt ...] [--num N] [--temperature T --top-k K ...]
repro data prepare|verify|info|demo ...       prepared corpora (repro/data/store.py)
repro import official --checkpoint PATH --preset P --workdir D
repro bench [--lengths 1024,2048,4096,8192] [--d-model 256] [--batch 2] [--memory-budget-gb 12]
"""

from __future__ import annotations

import os
import signal
import sys


def _abort_during_startup(signum, frame):  # Ctrl-C before main() runs: no traceback, exit 130
    sys.stderr.write("aborted\n")
    os._exit(130)


signal.signal(signal.SIGINT, _abort_during_startup)

import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Perceiver AR reproduction suite.")
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)  # pipes: no 80-column wrap
err = Console(stderr=True, soft_wrap=True)  # an error stays on one line


import repro.app  # noqa: E402 - what the commands do (repro.app.run, ...)
from repro.app import UserError  # noqa: E402 - one-line errors, exit code 2

DataDir = Annotated[
    Path | None, typer.Option(help="prepared corpora live here (default: $REPRO_DATA_DIR, else ./data)")
]
CheckpointOpt = Annotated[
    str,
    typer.Option(help="latest | best (the best kept checkpoint by the section's headline) | STEP (a kept step)"),
]


def _section(name: str):
    from experiments import SECTIONS

    if name not in SECTIONS:
        raise UserError(f"unknown section '{name}' (available: {', '.join(SECTIONS)})")
    return SECTIONS[name]


def _experiment(section: str, preset: str | None, overrides: list[str], steps: int | None):
    from repro.config import apply_overrides

    sec = _section(section)
    exp = sec.preset(preset)
    if steps is not None:
        overrides = [*overrides, f"train.steps={steps}"]
    return sec, apply_overrides(exp, overrides)


def _print_results(sec, row: dict) -> None:
    m, h = row["metrics"], sec.headline
    out.print(
        f"[bold]{row['section']}/{row['preset']}[/] ({row['scale']}) after {row['steps']} steps: "
        f"{h.label} [bold green]{h.format(m.get(h.key))}[/]"
        + (f" ± {h.format(m[h.key + '_stderr'])}" if m.get(h.key + "_stderr") is not None else ""),
        highlight=False,
    )
    line = (
        f"nats/token {m['nats_per_token']:.4f} ± {m['nats_per_token_stderr']:.4f}, bits/token {m['bits_per_token']:.4f}"
    )
    line += "".join(f", {fact}" for fact in sec.summary_lines(m))  # the section's own (copy: exact match)
    out.print(line, highlight=False)
    ds = row["dataset"]
    what = "a reproduction run" if row["reproduction"] else "not a reproduction (scale or data differ from the paper)"
    from repro.data.source import dataset_label

    corpus = f"corpus '{ds['corpus']}', " if ds.get("corpus") else ""
    n = m.get("eval_documents")
    docs = "" if n is None else f" ({n:,} document{'' if n == 1 else 's'})"
    out.print(f"data: {corpus}{dataset_label(ds['name'], ds['variant'])}, split {row['split']}{docs}, "
              f"protocol {row['protocol']}; {what}", highlight=False)  # fmt: skip
    for name, b in row.get("baselines", {}).items():
        out.print(f"baseline {name}: {h.format(b['value'])} ({b['description']})", highlight=False)


@app.command("list")
def list_presets() -> None:
    """List sections and their presets."""
    from experiments import SECTIONS
    from repro.results import ResultsError, read_row

    table = Table("section", "preset", "scale", "context", "latents", "layers", "recorded result", "description")
    table.columns[1].no_wrap = True
    root = Path(__file__).resolve().parent / "results"
    for name_, sec in SECTIONS.items():
        for name, e in sec.presets.items():
            default = " (default)" if name == sec.default_preset else ""
            rec = "–"
            if (root / name_ / name / "results.json").is_file():
                try:
                    row = read_row(root / name_ / name / "results.json")
                    rec = f"{sec.headline.format(row['headline']['value'])} at step {row['steps']:,}"
                except ResultsError:
                    pass
            table.add_row(
                name_, name + default, e.scale, f"{e.model.max_context:,}", str(e.model.num_latents),
                str(e.model.num_layers), rec, e.description,
            )  # fmt: skip
    out.print(table)
    out.print(f"recorded results: {root} (repro report writes results/report.md)", highlight=False)


@app.command()
def run(
    section: Annotated[str, typer.Argument(help="paper section, e.g. copy")],
    preset: Annotated[str | None, typer.Option(help="preset name (see `repro list`)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. model.num_latents=64")] = None,
    workdir: Annotated[Path | None, typer.Option(help="run directory (default runs/<section>/<preset>)")] = None,
    steps: Annotated[int | None, typer.Option(help="shortcut for --set train.steps=N")] = None,
    data_dir: DataDir = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print parameters, FLOPs and memory of a step; do not train")
    ] = False,
    compile_: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="with --dry-run: lower and compile the train step for XLA's FLOP and memory analysis "
            "(default: on, except for paper-scale presets)",
        ),
    ] = None,
    simulate_devices: Annotated[
        int | None, typer.Option(help="with --dry-run: compile for N simulated CPU devices (e.g. a pod mesh)")
    ] = None,
    coordinator: Annotated[
        str | None, typer.Option(help="multi-process: host:port of process 0 (see docs/launch.md)")
    ] = None,
    num_processes: Annotated[int | None, typer.Option(help="multi-process: number of processes")] = None,
    process_id: Annotated[int | None, typer.Option(help="multi-process: this process's index")] = None,
    distributed: Annotated[
        bool,
        typer.Option("--distributed", help="call jax.distributed.initialize() with auto-detected arguments (TPU pods)"),
    ] = False,
) -> None:
    """Train a preset (resuming if the workdir has a checkpoint), evaluate it, write results.json.

    Multi-process runs: run the same command on every process. Slurm (srun), Open MPI and
    multi-host TPU are detected; otherwise pass --coordinator/--num-processes/--process-id.
    """
    sec, exp = _experiment(section, preset, set_ or [], steps)
    if dry_run:
        _dry_run(sec, exp, compile_, simulate_devices)
        return
    from repro.parallel import maybe_initialize_distributed

    how = maybe_initialize_distributed(coordinator, num_processes, process_id, force=distributed)
    if how:
        err.print(f"distributed: {how}")
    from repro.train.errors import TrainingDiverged, TrainingInterrupted

    workdir = workdir or Path("runs") / section / exp.preset
    try:
        row = repro.app.run(sec, exp, workdir, data_dir=data_dir, console=err, show_progress=progress)
    except TrainingDiverged as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(3)
    except TrainingInterrupted as e:  # SIGINT / SIGTERM: a checkpoint was saved
        err.print(str(e), highlight=False)
        sys.exit(130)
    import jax

    if jax.process_index() == 0:
        _print_results(sec, row)
        out.print(f"results: {workdir / 'results.json'}")


def _dry_run(sec, exp, compile_: bool | None, simulate_devices: int | None) -> None:
    import jax

    if simulate_devices:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", simulate_devices)
    from repro.dryrun import dry_run
    from repro.flops import human

    if compile_ is None:
        compile_ = exp.scale != "paper"
    r = dry_run(exp, compile=compile_)
    title = f"{exp.section}/{exp.preset} ({exp.scale}) dry run, mesh {r['mesh']}"
    table = Table(title=title, show_header=False)
    table.add_row("parameters", f"{r['params']:,} (analytic formula: {r['params_analytic']:,})")
    table.add_row(
        "FLOPs per step (analytic)",
        f"{human(r['flops_per_step'])} = {human(r['flops_per_target_token'])} per target token "
        f"x {r['target_tokens_per_step']:,} target tokens",
    )
    table.add_row("train state (f32 params + Adam)", f"{human(r['train_state_bytes'], 'B')} (+ gradients)")
    if r["compiled"]:
        xf = r["xla_flops_per_step_per_device"]
        table.add_row("XLA FLOPs per step per device", human(xf) if xf is not None else "n/a")
        mem = r["memory_per_device"]
        if mem:
            table.add_row(
                "compiled memory per device",
                f"peak ~{human(mem['peak_estimate'], 'B')}: arguments {human(mem['argument'], 'B')}, "
                f"outputs {human(mem['output'], 'B')} (aliased {human(mem['alias'], 'B')}), "
                f"temporaries {human(mem['temp'], 'B')}",
            )
        table.add_row("compile time", f"{r['compile_seconds']:.1f} s")
    else:
        table.add_row("compiled", "no (pass --compile for XLA's FLOP count and memory analysis)")
    precision = f"compute {r['compute_dtype']}, remat {r['remat']}, attention {r['attention_impl']}"
    table.add_row("precision / memory", precision)
    if stages := repro.app.curriculum(sec, exp):
        chain = " -> ".join(f"{e.preset} ({e.model.max_context:,})" for e in [*stages, exp])
        table.add_row("curriculum", f"{chain}: earlier stages train first, in <workdir>/stages/")
    out.print(table)


@app.command("eval")
def eval_(
    section: Annotated[str, typer.Argument(help="paper section, e.g. copy")],
    workdir: Annotated[Path, typer.Option(help="a run directory written by `repro run`")],
    protocol: Annotated[
        str | None,
        typer.Option(
            help="stride1 | blocked:B (B <= num_latents) | cached:F (through the sampler's KV cache, "
            "reset fill F < num_latents); default: the section's (copy: blocked:M)"
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="validation | test (default: the run's data.eval_split)")] = None,
    max_examples: Annotated[
        int | None,
        typer.Option(
            help="evaluate the first N documents of the split (default: as many as training evaluates, the "
            "run's data.eval_examples; 0 there = the whole split)"
        ),
    ] = None,
    data_dir: DataDir = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    checkpoint: CheckpointOpt = "latest",
) -> None:
    """Evaluate a checkpoint of a run directory (default: the latest) under a named protocol, on as
    many documents as training evaluates (or --max-examples); print the metrics and write them to
    <workdir>/evals/<split>_<protocol>.json (_step<N>.json when --checkpoint is best or a step)."""
    sec = _section(section)
    row, path = repro.app.evaluate_run(
        sec, workdir, protocol=protocol, split=split, max_examples=max_examples, data_dir=data_dir,
        show_progress=progress, console=err, checkpoint=checkpoint,
    )  # fmt: skip
    _print_results(sec, row)
    m = row["metrics"]
    out.print(f"protocol {m['protocol']}: {m['eval_documents']} documents, {m['eval_tokens']:.0f} scored targets; "
              f"checkpoint {row['checkpoint']} (step {row['steps']})", highlight=False)  # fmt: skip
    out.print(f"written: {path}")


@app.command()
def sample(
    section: Annotated[str, typer.Argument(help="paper section, e.g. copy")],
    workdir: Annotated[Path, typer.Option(help="a run directory written by `repro run`")],
    prompt: Annotated[str | None, typer.Option(help="a prompt in the section's format (copy: byte values)")] = None,
    num: Annotated[int, typer.Option(help="number of samples (prompts from the eval split)")] = 8,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy (default: the section's)")] = None,
    top_k: Annotated[
        int | None, typer.Option(help="keep the k most likely tokens (0 = off; default: the section's)")
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(help="nucleus mass in (0, 1] (1 = off; default: the section's)")
    ] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    fill: Annotated[int, typer.Option(help="latents refilled at a cache reset (0 = num_latents / 2)")] = 0,
    data_dir: DataDir = None,
    checkpoint: CheckpointOpt = "latest",
) -> None:
    """Generate from a checkpoint (default: the latest) with the KV cache; write <workdir>/samples/
    (samples/step<N>/ when --checkpoint is best or a step)."""
    summary, outdir = repro.app.sample_run(
        _section(section), workdir, prompt=prompt, num=num, temperature=temperature, top_k=top_k, top_p=top_p,
        seed=seed, fill=fill, data_dir=data_dir, checkpoint=checkpoint,
    )  # fmt: skip
    out.print(json.dumps(summary), highlight=False)
    out.print(f"written: {outdir}")


data_app = typer.Typer(no_args_is_help=True, help="Prepared corpora: prepare, verify, info, demo.")
app.add_typer(data_app, name="data")


def _corpus_section(name: str):
    from repro.section import CorpusSection

    sec = _section(name)
    if not isinstance(sec, CorpusSection):
        raise UserError(f"section '{name}' has no corpus to prepare (its data is synthetic)")
    return sec


def _file_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold blue]prepare"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
        TimeRemainingColumn(), TextColumn("{task.fields[label]}"), console=err, transient=True,
        disable=not err.is_terminal,  # a transient bar leaves nothing in a log but an empty line
    )  # fmt: skip


def _print_manifest(m: dict, path: Path) -> None:
    from repro.data.source import dataset_label
    from repro.data.store import data_identity

    origin = m.get("origin") or ("paper" if m.get("is_paper_data") else "demo")
    why = f": {m['origin_note']}" if m.get("origin_note") else ""
    out.print(f"[bold]{m['section']}/{m['corpus']}[/]: {dataset_label(m['dataset'], m['source']['variant'])} "
              f"({origin} data{why}), tokenizer {m['tokenizer']['identity']} ({m['tokenizer']['vocab_size']:,} ids), "
              f"data hash {data_identity(m)[:16]}, in {path}", highlight=False)  # fmt: skip
    for split, s in m["splits"].items():
        words = f", {s['words']:,} words" if s.get("words") is not None else ""
        out.print(f"  {split}: {s['documents']:,} documents, {s['tokens']:,} tokens{words}", highlight=False)
    if m["skipped"]:
        out.print(f"  skipped {len(m['skipped'])} file(s) (listed in the manifest)", highlight=False)
    names = {"bom": "a byte-order mark removed", "crlf": "CRLF line ends made LF"}
    for what, n in (m.get("normalized") or {}).items():
        out.print(f"  {n:,} document(s): {names.get(what, what)} (recorded in the manifest)", highlight=False)


@data_app.command("prepare")
def data_prepare(
    section: Annotated[str, typer.Argument(help="section, e.g. imagenet64, pg19")],
    source: Annotated[Path | None, typer.Option(help="the dataset in its official raw layout")] = None,
    preset: Annotated[str | None, typer.Option(help="whose data options (tokenizer...) to use")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override the preset's data options, e.g. data.vocab_size=8000")
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="prepare the demo corpus (built if --source is absent)")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="prepare again a corpus that runs under runs/ were trained on")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Read a raw dataset and write a prepared corpus (token store + manifest.json), atomically.
    A cpu or smoke run (data.corpus=auto) then trains on it when prepared with its preset."""
    from repro.config import apply_overrides

    sec = _corpus_section(section)
    exp = apply_overrides(sec.preset(preset or (sec.default_preset if demo else sec.prepare_preset)), set_ or [])
    # The preset's corpus name (e.g. maestro paper_v1 keeps its own), or "main" for a cpu preset
    # pointed at real data; --demo always prepares the demo corpus.
    corpus = "demo" if demo else (exp.data.corpus if exp.data.corpus not in ("demo", "auto") else "main")
    cfg = dataclasses.replace(exp.data, corpus=corpus)
    with _file_progress() as prog:
        task = prog.add_task("prepare", total=None, label="")

        def on_file(done, total, label):
            prog.update(task, completed=done, total=total, label=Path(label).name[-40:])

        def warn(msg):
            prog.console.print(f"[yellow]warning:[/] {msg}", highlight=False)

        def log(msg):
            prog.console.print(msg, highlight=False)

        if demo and source is None:
            m = sec.prepare_demo(cfg, data_dir, log=warn, progress=on_file)
        else:
            if source is None:
                raise UserError("--source DIR is required (or --demo)")
            m = sec.prepare(cfg, source, data_dir, progress=on_file, warn=warn, log=log, force=force)
    _print_manifest(m, sec.corpus_dir(cfg, data_dir))
    vocab = int(m["tokenizer"]["vocab_size"]) + 3  # + PAD, EOS, SOS
    if vocab > exp.model.vocab_size:
        err.print(f"[yellow]warning:[/] the prepared vocabulary ({vocab:,} ids with the 3 reserved ones) is larger "
                  f"than preset {exp.preset}'s model.vocab_size={exp.model.vocab_size:,}: a run needs "
                  f"--set model.vocab_size={vocab}", highlight=False)  # fmt: skip


@data_app.command("verify")
def data_verify(
    section: Annotated[str, typer.Argument(help="section, e.g. imagenet64")],
    preset: Annotated[str | None, typer.Option(help="the preset whose corpus to check (default: all prepared)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Re-check prepared corpora of a section against their manifests (checksums and counts)."""
    from repro.data.store import data_dir as root
    from repro.data.store import verify

    sec = _corpus_section(section)
    dirs = [sec.corpus_dir(sec.preset(preset).data, data_dir)] if preset else sorted(
        p.parent for p in (root(data_dir) / section).glob("*/manifest.json"))  # fmt: skip
    if not dirs:
        raise UserError(f"nothing prepared for {section} in {root(data_dir)}")
    for d in dirs:
        m = verify(d)
        out.print(f"ok: {d} ({sum(s['documents'] for s in m['splits'].values()):,} documents)", highlight=False)


@data_app.command("info")
def data_info(data_dir: DataDir = None) -> None:
    """List the prepared corpora in the data directory."""
    from repro.data.store import data_dir as root
    from repro.data.store import list_corpora

    items = list_corpora(root(data_dir))
    if not items:
        out.print(f"no prepared corpora in {root(data_dir)}", highlight=False)
    for m in items:
        if "error" in m:
            out.print(f"[red]damaged:[/] {m['path']}: {m['error']}", highlight=False)
        else:
            _print_manifest(m, Path(m["path"]))


@data_app.command("demo")
def data_demo(
    section: Annotated[str, typer.Argument(help="section, e.g. imagenet64")],
    out_dir: Annotated[Path, typer.Option("--out", help="write the demo raw data (official layout) here")],
) -> None:
    """Build a section's demo raw data, in the official layout, from data an installed package ships."""
    sec = _corpus_section(section)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} is not empty")
    src = sec.write_demo(out_dir)
    out.print(f"written: {src} ({sec.demo_name}); next: repro data prepare {section} --source {src} --demo",
              highlight=False)  # fmt: skip


@app.command()
def report(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="run directories or result folders (default: results/ and runs/, where they exist)"),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="where report.md, report.csv and plots/ go")] = Path("results"),
) -> None:
    """The paper's numbers and ours side by side: results/report.md (+ .csv, plots/)."""
    from experiments import SECTIONS
    from repro.report import write_report

    # By default the recorded results and the runs the README's commands write (runs/<section>/<preset>).
    paths = paths or [p for p in (Path("results"), Path("runs")) if p.exists()] or [Path("results")]
    for p in paths:
        if not p.exists():
            raise UserError(f"{p} does not exist")
    files = write_report(SECTIONS, paths, out_dir, deviations=Path("docs/deviations.md"))
    out.print("written: " + ", ".join(str(p) for p in files.values()), highlight=False)


@app.command()
def reproduce(
    scale: Annotated[str, typer.Option(help="smoke | cpu | paper: run every section's presets of this scale")] = "cpu",
    runs_dir: Annotated[Path, typer.Option("--runs", help="run directories go to RUNS/<section>/<preset>")] = Path(
        "runs"
    ),
    out_dir: Annotated[Path, typer.Option("--out", help="where the report goes")] = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="paper scale without an accelerator")] = False,
    data_dir: DataDir = None,
) -> None:
    """Every section's presets of one scale (finished runs are not retrained, interrupted ones
    resume; demo corpora are built where the real data is absent), then `repro report`."""
    import jax

    from experiments import SECTIONS
    from repro.report import write_report

    if scale not in ("smoke", "cpu", "paper"):
        raise UserError(f"--scale must be smoke, cpu or paper, got '{scale}'")
    if scale == "paper" and jax.default_backend() == "cpu" and not force:
        raise UserError("paper-scale presets need accelerators (pass --force to run them on a CPU anyway); "
                        "each needs its dataset prepared: repro data prepare SECTION --source DIR")  # fmt: skip
    for name, sec in SECTIONS.items():
        for preset, exp in sec.presets.items():
            if exp.scale != scale:
                continue
            err.print(f"[bold]{name}/{preset}[/]", highlight=False)
            # A finished run prints its recorded result and trains nothing (repro/train/loop.py).
            repro.app.run(sec, exp, runs_dir / name / preset, data_dir=data_dir, console=err, show_progress=False,
                          stage_root=runs_dir / name)  # a curriculum's stages are the sweep's own runs  # fmt: skip
    from experiments.studies import STUDIES
    from repro.study import run_study

    for name, st in STUDIES.items():  # then the claims studies of this scale, each into OUT/studies/<name>
        if scale in st.designs:
            err.print(f"[bold]study {name}[/] ({scale})", highlight=False)
            run_study(st, scale, runs_dir / "studies" / name / scale, out_dir / "studies" / name, data_dir=data_dir,
                      console=err, show_progress=False, log=lambda m: err.print(m, highlight=False))  # fmt: skip
    paths = [p for p in (runs_dir, out_dir) if p.exists()]  # the new runs and the recorded results
    files = write_report(SECTIONS, paths, out_dir, deviations=Path("docs/deviations.md"))
    out.print("written: " + ", ".join(str(p) for p in files.values()), highlight=False)


study_app = typer.Typer(no_args_is_help=True, help="The paper's claims as studies: list, run, show.")
app.add_typer(study_app, name="study")


def _study(name: str):
    from experiments.studies import STUDIES

    if name not in STUDIES:
        raise UserError(f"unknown study '{name}' (available: {', '.join(STUDIES)})")
    return STUDIES[name]


@study_app.command("list")
def study_list() -> None:
    """The studies: claim, section, scales, points."""
    from experiments.studies import STUDIES

    table = Table("study", "claim", "section", "scales", "cpu points", "claim (paper)")
    for name, s in STUDIES.items():
        cpu = s.designs.get("cpu")
        pts = ", ".join(p.name for p in cpu.points) if cpu else "–"
        table.add_row(name, s.claim_id, s.section, ", ".join(s.designs), pts, s.claim)
    out.print(table)


@study_app.command("run")
def study_run(
    name: Annotated[str, typer.Argument(help="a study (see `repro study list`)")],
    preset: Annotated[str, typer.Option(help="the study's design: cpu or smoke")] = "cpu",
    runs_dir: Annotated[Path, typer.Option("--runs", help="point runs go to RUNS/<study>/<point>/seed<S>")] = Path(
        "runs/studies"
    ),
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="study.json + study.png (default: the runs folder)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the points, FLOPs and a time estimate")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    data_dir: DataDir = None,
) -> None:
    """Train every point of a study (resuming; finished points are not retrained), evaluate all
    under one protocol, write study.json with each comparison's effect, stderr and verdict."""
    from repro import study

    st = _study(name)
    try:
        st.design(preset)
        root = runs_dir / name / preset
        runs = study.plan(st, preset, root)
    except ValueError as e:
        raise UserError(str(e)) from None
    if dry_run:
        from repro.flops import human

        table = Table("point", "seed", "preset", "context", "latents", "steps", "training FLOPs", "protocol", "run",
                      title=f"study {name} ({preset}): {st.claim_id}")  # fmt: skip
        for r in runs:
            table.add_row(r.point.name, str(r.seed), r.exp.preset, f"{r.exp.model.max_context:,}",
                          str(r.exp.model.num_latents), f"{r.exp.train.steps:,}", human(r.train_flops),
                          r.protocol, f"shares {r.shared_with}" if r.shared_with else str(r.workdir))  # fmt: skip
        out.print(table)
        total = sum(r.train_flops for r in runs if not r.shared_with)
        seconds, rate = study.estimate_seconds(runs)
        out.print(f"training: {human(total)}FLOP in all, about {seconds / 60:.0f} minutes at {rate} (evaluation not "
                  "included)", highlight=False)  # fmt: skip
        return
    out_dir = out_dir or root
    doc = study.run_study(st, preset, root, out_dir, data_dir=data_dir, console=err, show_progress=progress,
                          log=lambda m: err.print(m, highlight=False))  # fmt: skip
    _print_study(doc)
    out.print(f"written: {out_dir / 'study.json'}, {out_dir / 'study.png'}", highlight=False)


def _print_study(doc: dict) -> None:
    table = Table("point", "seeds", doc["metric_label"], "± s.e.", "steps", "s/step", "training FLOPs",
                  title=f"{doc['study']} ({doc['scale']}, {', '.join(doc['datasets'])})")  # fmt: skip
    from repro.flops import human

    for p in doc["points"]:
        fmt = lambda v, spec=".4f": "–" if v is None else format(v, spec)  # noqa: E731
        table.add_row(p["point"], str(p["seeds"]), fmt(p["mean"]), fmt(p["stderr"]), fmt(p["steps"], ".0f"),
                      fmt(p["step_seconds"], ".3f"), human(p["train_flops"] or 0))  # fmt: skip
    out.print(table)
    for c in doc["comparisons"]:
        out.print(
            f"{c['what'] or c['treatment']}: effect {c.get('effect', float('nan')):+.4f} ± "
            f"{c.get('stderr', float('nan')):.4f} -> [bold]{c['verdict']}[/] ({c['why']})",
            highlight=False,
        )
    out.print(f"claim: {doc['claim']} {doc['source']}", highlight=False)
    out.print(f"verdict: [bold]{doc['verdict']}[/] at {doc['scale']} scale on {', '.join(doc['datasets'])}"
              + ("" if doc["is_paper_data"] else " (not the paper's data)"), highlight=False)  # fmt: skip


@study_app.command("show")
def study_show(
    name: Annotated[str, typer.Argument(help="a study (see `repro study list`)")],
    path: Annotated[Path | None, typer.Option(help="a study.json (default: results/studies/NAME/study.json)")] = None,
) -> None:
    """Print a recorded study: its points, effects and verdict."""
    from repro.study import read_study

    st = _study(name)
    path = path or Path("results/studies") / st.name / "study.json"
    if not path.is_file():
        raise UserError(f"no recorded study at {path}; run: repro study run {name} (or pass --path)")
    try:
        _print_study(read_study(path))
    except ValueError as e:
        raise UserError(str(e)) from None


import_app = typer.Typer(no_args_is_help=True, help="Import weights trained elsewhere.")
app.add_typer(import_app, name="import")


@import_app.command("official")
def import_official_(
    checkpoint: Annotated[
        Path, typer.Option(help="official jaxline checkpoint.dill, its step dir or the unzipped release")
    ],
    workdir: Annotated[Path, typer.Option(help="run directory to create (must not hold a run)")],
    preset: Annotated[
        str, typer.Option(help="the preset whose model the checkpoint holds, e.g. random_mirrored_131072")
    ],
    section: Annotated[
        str | None, typer.Option(help="paper section of the preset (default: the one section that has it)")
    ] = None,
) -> None:
    """Convert an official Perceiver AR (Haiku / jaxline) checkpoint into a run directory that
    `repro eval` and `repro sample` use directly (docs/official_checkpoints.md)."""
    from experiments import SECTIONS
    from repro.official import import_official

    if section is None:
        having = [name for name, s in SECTIONS.items() if preset in s.presets]
        if len(having) != 1:
            raise UserError(f"--preset {preset}: " + (f"in sections {', '.join(having)}; name one with --section"
                                                      if having else "no section has this preset"))  # fmt: skip
        section = having[0]
    sec = _section(section)
    summary = import_official(checkpoint, sec.preset(preset), workdir)
    out.print(json.dumps({k: v for k, v in summary.items() if k != "mapping"}, default=str), highlight=False)
    out.print(f"written: {workdir}; next: repro eval {section} --workdir {workdir}", highlight=False)


@app.command()
def bench(
    lengths: Annotated[str, typer.Option(help="context lengths N, comma-separated")] = "1024,2048,4096,8192",
    d_model: Annotated[int, typer.Option(help="model width d")] = 256,
    num_latents: Annotated[int, typer.Option(help="Perceiver AR latents M")] = 256,
    num_layers: Annotated[int, typer.Option(help="latent layers L (the Transformer gets L + 1)")] = 4,
    heads: Annotated[int, typer.Option(help="attention heads")] = 4,
    batch: Annotated[int, typer.Option(help="sequences per step")] = 2,
    repeats: Annotated[int, typer.Option(help="timed steps per model and N (interleaved)")] = 3,
    memory_budget_gb: Annotated[
        float, typer.Option(help="skip a model whose compiled memory estimate exceeds this")
    ] = 12.0,
    models: Annotated[str, typer.Option(help="comma-separated: perceiver_ar,transformer")] = "perceiver_ar,transformer",
    matmul_size: Annotated[int, typer.Option(help="n of the n x n f32 matmul that measures the peak")] = 2048,
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path("results/bench"),
) -> None:
    """Training step time, tokens/s, FLOP/s and memory of Perceiver AR vs the Transformer baseline
    across context lengths; writes training.json, training.md and training_step_time.png."""
    from repro.bench import MODELS, BenchConfig, run_bench, write

    try:
        ns = tuple(int(x) for x in lengths.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--lengths must be comma-separated integers, got '{lengths}'") from None
    ms = tuple(m.strip() for m in models.split(",") if m.strip())
    if not ns or any(not 2 <= n <= 1 << 24 for n in ns):
        raise UserError("--lengths must be integers in [2, 2^24]")
    if not ms or any(m not in MODELS for m in ms):
        raise UserError(f"--models must be a subset of {','.join(MODELS)}")
    for name, v, lo in (("--d-model", d_model, 1), ("--num-latents", num_latents, 1), ("--num-layers", num_layers, 0),
                        ("--heads", heads, 1), ("--batch", batch, 1), ("--repeats", repeats, 1),
                        ("--matmul-size", matmul_size, 1)):  # fmt: skip
        if not lo <= v <= 1 << 20:
            raise UserError(f"{name} must be in [{lo}, 2^20], got {v}")
    if d_model % heads:
        raise UserError(f"--d-model {d_model} is not divisible by --heads {heads}")
    if not (memory_budget_gb > 0 and memory_budget_gb < float("inf")):
        raise UserError(f"--memory-budget-gb must be > 0, got {memory_budget_gb}")
    _check_writable(out_dir)  # before any measurement: a bad --out must not lose the results
    bc = BenchConfig(
        lengths=ns, d_model=d_model, num_latents=num_latents, num_layers=num_layers, heads=heads, batch=batch,
        repeats=repeats, memory_budget_gb=memory_budget_gb, models=ms, matmul_size=matmul_size,
    )  # fmt: skip
    res = run_bench(bc, log=lambda msg: err.print(msg, highlight=False))
    paths = write(res, out_dir)
    out.print(paths["md"].read_text(), soft_wrap=True, highlight=False, markup=False)
    out.print("written: " + ", ".join(str(p) for p in paths.values()))


def _check_writable(d: Path) -> None:
    """``d`` exists (or is created) and accepts a file; one error line otherwise."""
    import tempfile

    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"cannot write to {d}: {e.strerror or e}") from None


def main() -> None:
    """Console entry point (see ``_main``). Whatever the outcome, once the command is over a
    Ctrl-C during interpreter teardown (JAX's thread pools take a moment) must not kill the
    process with SIGINT: SIG_IGN survives finalisation, which resets Python-level handlers."""
    # Process-wide tuning is the program's, not the library's (``import repro`` changes nothing
    # process-wide; it used to apply this on import): glibc's allocator settings, before the
    # command starts JAX's threads (repro/allocator.py: no per-step page faults on CPU).
    from repro.allocator import tune_allocator

    tune_allocator()
    try:
        _main()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from repro.config import ConfigError
    from repro.data.source import DataError

    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, Ctrl-C is KeyboardInterrupt
    if _HARD_EXIT:
        sys.unraisablehook = _abort_on_lost_interrupt(sys.unraisablehook)
    try:
        rc = app(standalone_mode=False)
    except (UserError, ConfigError, DataError) as e:
        from rich.markup import escape

        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)  # "[hub]" in a message is text
        sys.exit(2)
    except OSError as e:  # a filesystem error: read-only, full, not a directory, name too long
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        err.print(f"[red]error:[/] {where}{e.strerror or e}", highlight=False)
        _hard_exit(2)  # no teardown: Orbax's threads would print their copy of the error again
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("[red]aborted[/]")
        _hard_exit(130)
    except typer.TyperException as e:  # usage errors (bad option values, missing arguments)
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        err.print(f"[red]error:[/] {msg}", highlight=False)
        sys.exit(getattr(e, "exit_code", 2))
    # Typer turns Ctrl-C into Exit(130) and, outside standalone mode, *returns* the exit code.
    if isinstance(rc, int) and rc:
        if rc == 130:
            err.print("[red]aborted[/]")
            _hard_exit(130)
        sys.exit(rc)


_HARD_EXIT = True  # the test suite's in-process CLI runs set this False (os._exit would end pytest)


def _abort_on_lost_interrupt(hook):
    """An unraisable hook for the command's run: a Ctrl-C whose KeyboardInterrupt was raised
    inside a callback Python cannot propagate from (seen: JAX's garbage-collection callback,
    which printed "Exception ignored in ... Traceback" and trained on) ends the command as any
    other Ctrl-C does: "aborted", exit 130. Everything else goes to ``hook``."""

    def handle(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            err.print("[red]aborted[/]")
            _hard_exit(130)
        hook(unraisable)

    return handle


def _hard_exit(code: int) -> None:
    """Exit now, without interpreter teardown: after Ctrl-C in start-up XLA's threads may still be
    compiling, and tearing the interpreter down under them can segfault (seen: exit -11)."""
    if not _HARD_EXIT:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
