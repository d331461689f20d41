"""The ``repro`` command line: parsing and dispatch only; the work is in ``repro/`` and ``experiments/``.

repro list                                    sections and presets
repro run copy [--preset P] [--set k=v ...] [--workdir D] [--steps N]
repro eval copy --workdir D [--protocol stride1|blocked:B] [--max-examples N]
repro sample copy --workdir D [--prompt ...] [--num N] [--temperature T --top-k K --top-p P --seed S]
repro bench [--lengths 1024,2048,4096,8192] [--d-model 256] [--batch 2] [--memory-budget-gb 12]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Perceiver AR reproduction suite.")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error stays on one line


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _section(name: str):
    from experiments import SECTIONS

    if name not in SECTIONS:
        raise UserError(f"unknown section '{name}' (available: {', '.join(SECTIONS)})")
    return SECTIONS[name]


def _experiment(section: str, preset: str | None, overrides: list[str], steps: int | None):
    from repro.config import apply_overrides

    mod = _section(section)
    preset = preset or mod.DEFAULT_PRESET
    if preset not in mod.PRESETS:
        raise UserError(f"unknown preset '{preset}' for {section} (available: {', '.join(mod.PRESETS)})")
    if steps is not None:
        overrides = [*overrides, f"train.steps={steps}"]
    return mod, apply_overrides(mod.PRESETS[preset], overrides)


def _print_results(mod, results: dict) -> None:
    name, value = mod.headline(results)
    m = results["metrics"]
    out.print(
        f"[bold]{results['section']}/{results['preset']}[/] ({results['scale']}) after {results['steps']} steps: "
        f"{name} [bold green]{value:.4%}[/]"
    )
    line = (
        f"nats/token {m['nats_per_token']:.4f} ± {m['nats_per_token_stderr']:.4f}, bits/token {m['bits_per_token']:.4f}"
    )
    if "sequence_accuracy" in m:
        line += f", sequence exact match {m['sequence_accuracy']:.4%} of {m['eval_sequences']}"
    out.print(line)


@app.command("list")
def list_presets() -> None:
    """List sections and their presets."""
    from experiments import SECTIONS

    table = Table("section", "preset", "scale", "context", "latents", "layers", "description")
    table.columns[1].no_wrap = True
    for sec, mod in SECTIONS.items():
        for name, e in mod.PRESETS.items():
            default = " (default)" if name == mod.DEFAULT_PRESET else ""
            table.add_row(
                sec, name + default, e.scale, f"{e.model.max_context:,}", str(e.model.num_latents),
                str(e.model.num_layers), e.description,
            )  # fmt: skip
    out.print(table)


@app.command()
def run(
    section: Annotated[str, typer.Argument(help="paper section, e.g. copy")],
    preset: Annotated[str | None, typer.Option(help="preset name (see `repro list`)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. model.num_latents=64")] = None,
    workdir: Annotated[Path | None, typer.Option(help="run directory (default runs/<section>/<preset>)")] = None,
    steps: Annotated[int | None, typer.Option(help="shortcut for --set train.steps=N")] = None,
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
    mod, exp = _experiment(section, preset, set_ or [], steps)
    if dry_run:
        _dry_run(exp, compile_, simulate_devices)
        return
    from repro.parallel import maybe_initialize_distributed

    how = maybe_initialize_distributed(coordinator, num_processes, process_id, force=distributed)
    if how:
        err.print(f"distributed: {how}")
    from repro.train.errors import TrainingDiverged, TrainingInterrupted
    from repro.train.loop import train

    workdir = workdir or Path("runs") / section / exp.preset
    try:
        dataset = mod.make_dataset(exp)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        results = train(exp, dataset, workdir, console=err, show_progress=progress)
    except TrainingDiverged as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(3)
    except TrainingInterrupted as e:  # SIGINT / SIGTERM: a checkpoint was saved
        err.print(str(e), highlight=False)
        sys.exit(130)
    import jax

    if jax.process_index() == 0:
        _print_results(mod, results)
        out.print(f"results: {workdir / 'results.json'}")


def _dry_run(exp, compile_: bool | None, simulate_devices: int | None) -> None:
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
    out.print(table)


def _load_run(section: str, workdir: Path):
    """(section module, experiment, built run, restored params, step) of a run directory."""
    from repro.checkpoint import Checkpointer
    from repro.config import ConfigError, experiment_from_dict
    from repro.train.loop import build

    mod = _section(section)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{workdir} is not a run directory (no config.json)")
    try:
        exp = experiment_from_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError, ConfigError) as e:
        raise UserError(f"{cfg_path} is not a valid config: {e}") from None
    if exp.section != section:
        raise UserError(f"{workdir} holds a '{exp.section}' run, not '{section}'")
    ckpt = Checkpointer(workdir)
    step = ckpt.latest_step()
    if step is None:
        raise UserError(f"{workdir} has no checkpoint yet")
    r = build(exp)
    state = ckpt.restore(step, {"params": r.params, "opt_state": r.opt_state})
    ckpt.close()
    return mod, exp, r, state["params"], step


@app.command("eval")
def eval_(
    section: Annotated[str, typer.Argument(help="paper section, e.g. copy")],
    workdir: Annotated[Path, typer.Option(help="a run directory written by `repro run`")],
    protocol: Annotated[
        str | None,
        typer.Option(help="stride1 | blocked:B (B <= num_latents); default: the section's (copy: blocked:M)"),
    ] = None,
    max_examples: Annotated[int | None, typer.Option(help="evaluate only the first N documents")] = None,
) -> None:
    """Evaluate the latest checkpoint of a run directory under a named protocol; print the metrics
    and write them (with the protocol name) to <workdir>/evals/<protocol>.json."""
    from repro.eval.evaluate import evaluate
    from repro.runinfo import device_info, git_sha, now, write_json_atomic

    mod, exp, r, params, step = _load_run(section, workdir)
    ds = mod.make_dataset(exp)
    bs = exp.train.batch_size
    protocol = protocol or mod.default_protocol(exp)
    try:
        batches = ds.eval_batches(exp.data.eval_examples, bs, protocol=protocol, max_examples=max_examples)
    except ValueError as e:
        raise UserError(str(e)) from None
    metrics = evaluate(r.steps.eval, params, batches, bs)
    results = {"section": section, "preset": exp.preset, "scale": exp.scale, "steps": step, "metrics": metrics}
    _print_results(mod, results)
    docs, n = metrics["eval_documents"], metrics["eval_tokens"]
    out.print(f"protocol {metrics['protocol']}: {docs} documents, {n:.0f} scored targets")
    path = workdir / "evals" / f"{metrics['protocol'].replace(':', '_')}.json"
    path.parent.mkdir(exist_ok=True)
    extra = {"max_examples": max_examples, "git_sha": git_sha(), "device": device_info(), "date": now()}
    write_json_atomic(path, {**results, "protocol": metrics["protocol"], **extra})
    out.print(f"written: {path}")


@app.command()
def sample(
    section: Annotated[str, typer.Argument(help="paper section, e.g. copy")],
    workdir: Annotated[Path, typer.Option(help="a run directory written by `repro run`")],
    prompt: Annotated[str | None, typer.Option(help="a prompt in the section's format (copy: byte values)")] = None,
    num: Annotated[int, typer.Option(help="number of samples (prompts from the eval split)")] = 8,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy (default: the section's)")] = None,
    top_k: Annotated[int, typer.Option(help="keep the k most likely tokens (0 = off)")] = 0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass (1 = off)")] = 1.0,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    fill: Annotated[int, typer.Option(help="latents refilled at a cache reset (0 = num_latents / 2)")] = 0,
) -> None:
    """Generate from the latest checkpoint with the KV cache; write <workdir>/samples/."""
    import dataclasses

    from flax import nnx

    from repro.sample.sampler import SampleConfig, generate

    mod, exp, r, params, step = _load_run(section, workdir)
    if not hasattr(mod, "write_samples"):
        raise UserError(f"section '{section}' has no sampling hooks yet")
    cfg = dataclasses.replace(SampleConfig(), **getattr(mod, "SAMPLE_DEFAULTS", {}))
    cfg = dataclasses.replace(cfg, top_k=top_k, top_p=top_p, seed=seed, reset_fill=fill)
    if temperature is not None:
        cfg = dataclasses.replace(cfg, temperature=temperature)
    try:
        prompts, num_new, expected = mod.sample_prompts(exp, num, prompt)
    except ValueError as e:
        raise UserError(str(e)) from None
    model = nnx.merge(r.graphdef, params)
    result = generate(model, prompts, num_new, cfg)
    settings = {**dataclasses.asdict(cfg), "checkpoint_step": step}
    summary = mod.write_samples(exp, prompts, result.generated, expected, workdir / "samples", settings)
    out.print(json.dumps(summary))
    out.print(f"written: {workdir / 'samples'}")


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
    if not ns or any(n < 2 for n in ns):
        raise UserError("--lengths must be integers >= 2")
    if not ms or any(m not in MODELS for m in ms):
        raise UserError(f"--models must be a subset of {','.join(MODELS)}")
    bc = BenchConfig(
        lengths=ns, d_model=d_model, num_latents=num_latents, num_layers=num_layers, heads=heads, batch=batch,
        repeats=repeats, memory_budget_gb=memory_budget_gb, models=ms, matmul_size=matmul_size,
    )  # fmt: skip
    res = run_bench(bc, log=lambda msg: err.print(msg, highlight=False))
    paths = write(res, out_dir)
    out.print(paths["md"].read_text(), soft_wrap=True, highlight=False, markup=False)
    out.print("written: " + ", ".join(str(p) for p in paths.values()))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from repro.config import ConfigError

    try:
        rc = app(standalone_mode=False)
    except (UserError, ConfigError) as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("[red]aborted[/]")
        sys.exit(130)
    except typer.TyperException as e:  # usage errors (bad option values, missing arguments)
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        err.print(f"[red]error:[/] {msg}", highlight=False)
        sys.exit(getattr(e, "exit_code", 2))
    # Typer turns Ctrl-C into Exit(130) and, outside standalone mode, *returns* the exit code.
    if isinstance(rc, int) and rc:
        if rc == 130:
            err.print("[red]aborted[/]")
        sys.exit(rc)


if __name__ == "__main__":
    main()
