"""The ``repro`` command line: parsing and dispatch only; the work is in ``repro/`` and ``experiments/``.

    repro list                                    sections and presets
    repro run copy [--preset P] [--set k=v ...] [--workdir D] [--steps N]
    repro eval copy --workdir D
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
err = Console(stderr=True)


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
    line = f"nats/token {m['nats_per_token']:.4f} ± {m['nats_per_token_stderr']:.4f}, bits/token {m['bits_per_token']:.4f}"
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
) -> None:
    """Train a preset (resuming if the workdir has a checkpoint), evaluate it, write results.json."""
    from repro.train.loop import train

    mod, exp = _experiment(section, preset, set_ or [], steps)
    workdir = workdir or Path("runs") / section / exp.preset
    try:
        dataset = mod.make_dataset(exp)
    except ValueError as e:
        raise UserError(str(e)) from None
    results = train(exp, dataset, workdir, console=err, show_progress=progress)
    _print_results(mod, results)
    out.print(f"results: {workdir / 'results.json'}")


@app.command("eval")
def eval_(
    section: Annotated[str, typer.Argument(help="paper section, e.g. copy")],
    workdir: Annotated[Path, typer.Option(help="a run directory written by `repro run`")],
) -> None:
    """Evaluate the latest checkpoint of a run directory and print its metrics."""
    from repro.config import ConfigError, experiment_from_dict
    from repro.eval.evaluate import evaluate
    from repro.train.loop import build
    from repro.checkpoint import Checkpointer

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
    ds = mod.make_dataset(exp)
    bs = exp.train.batch_size
    metrics = evaluate(r.steps.eval, state["params"], ds.eval_batches(exp.data.eval_examples, bs), bs)
    _print_results(mod, {"section": section, "preset": exp.preset, "scale": exp.scale, "steps": step, "metrics": metrics})


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from repro.config import ConfigError

    try:
        app(standalone_mode=False)
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


if __name__ == "__main__":
    main()
