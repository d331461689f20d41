"""What the train-step optimisations of issue #5 are worth, measured on this machine (not a test).

The bench's Perceiver AR (``repro bench``: d=256, 4 heads, 1 cross-attend + 4 latent layers,
rotary, f32, Adam) at M=128, batch 8 (the peer config), at each N:

1. **allocator** (``repro/allocator.py``): the same train step in child processes with
   ``REPRO_MALLOC_TUNING=1`` and ``=0``, alternating (on, off) x ``--rounds``; each child reports
   its median step time, minor page faults per step and kernel (sys) CPU seconds per step.
2. **cross_kv_per_vocab** (``ModelConfig.cross_kv_per_vocab``): "auto" vs "off", both compiled
   in one process and timed interleaved (auto, off, auto, off, ...); median and min per variant.

    .venv/bin/python benchmarks/step_ablation.py --out results/bench

Writes ``step_ablation.json`` and ``step_ablation.md``. Timings depend on the machine and its load
(recorded); the ratios come from one stretch of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _experiment(n: int, **model):
    from repro.bench import BenchConfig, experiment

    exp = experiment(BenchConfig(lengths=(n,), num_latents=128, batch=8, models=("perceiver_ar",)), "perceiver_ar", n)
    return dataclasses.replace(exp, model=dataclasses.replace(exp.model, **model)) if model else exp


def _stepper(exp):
    """The bench's compiled, donated train step on its fixed random batch (``repro.bench._Prepared``,
    which also runs one warm-up step); returns a function timing one step."""
    from repro.bench import _Prepared

    prepared = _Prepared(exp, float("inf"), lambda *_: None)
    prepared.step()  # a second warm-up step: the first steps also grow the heap
    return prepared.step


def child(n: int, steps: int) -> None:
    """One process: median step time, minor faults and sys seconds per step (JSON on stdout)."""
    from repro.allocator import tune_allocator

    step = _stepper(_experiment(n))
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    times = [step() for _ in range(steps)]
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "tuned": tune_allocator(), "step_seconds": statistics.median(times), "step_seconds_all": times,
        "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
        "sys_seconds_per_step": (r1.ru_stime - r0.ru_stime) / steps,
        "user_seconds_per_step": (r1.ru_utime - r0.ru_utime) / steps,
        "load_average": os.getloadavg(),
    }))  # fmt: skip


def allocator(n: int, steps: int, rounds: int) -> list[dict]:
    out = []
    for _ in range(rounds):
        for flag in ("1", "0"):
            env = dict(os.environ, REPRO_MALLOC_TUNING=flag)
            cmd = [sys.executable, __file__, "--child", str(n), "--steps", str(steps)]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def per_vocab(n: int, steps: int) -> dict:
    variants = {v: _stepper(_experiment(n, cross_kv_per_vocab=v)) for v in ("auto", "off")}
    times = {v: [] for v in variants}
    for _ in range(steps):
        for v, step in variants.items():
            times[v].append(step())
    return {v: {"median": statistics.median(t), "min": min(t), "all": t} for v, t in times.items()}


def main() -> None:
    from repro.allocator import tune_allocator

    tune_allocator()  # process-wide, as cli.main does (repro/allocator.py); never on import repro
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="1024,8192")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.steps)
        return
    from repro.runinfo import provenance, write_json_atomic

    res = {"lengths": {}, "load_average_before": os.getloadavg()}
    for n in [int(x) for x in a.lengths.split(",")]:
        steps = a.steps if n <= 2048 else max(3, a.steps // 2)
        res["lengths"][str(n)] = {"allocator": allocator(n, steps, a.rounds), "cross_kv_per_vocab": per_vocab(n, steps)}
        print(f"N={n} done", flush=True)
    produced_by = "benchmarks/step_ablation.py " + " ".join(sys.argv[1:])
    res.update(load_average_after=os.getloadavg(), **provenance(produced_by))
    a.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.out / "step_ablation.json", res)
    lines = [
        "# Train-step ablations (issue #5): allocator tuning, cross-attend keys / values per vocabulary entry",
        "",
        "Perceiver AR of `repro bench` at M=128, batch 8 (d=256, 4 heads, 1 + 4 layers, rotary, f32, Adam). "
        f"git {res['git_sha']}, {res['date']}, {res['device']['platform']} ({res['device']['cpus']} CPUs). "
        "Produced by `benchmarks/step_ablation.py`.",
        "",
        "## 1. Allocator (`repro/allocator.py`): child processes, alternating tuned / untuned",
        "",
        "| N | tuned | step (s, median) | minor faults / step | sys CPU s / step | load avg (1 min) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n, r in res["lengths"].items():
        for c in r["allocator"]:
            lines.append(
                f"| {int(n):,} | {'yes' if c['tuned'] else 'no'} | {c['step_seconds']:.3f} "
                f"| {c['minor_faults_per_step']:,.0f} | {c['sys_seconds_per_step']:.3f} | {c['load_average'][0]:.2f} |"
            )
    lines += [
        "",
        "## 2. `cross_kv_per_vocab`: auto vs off, one process, interleaved",
        "",
        "| N | auto: median / min (s) | off: median / min (s) | off / auto (median) |",
        "|---:|---:|---:|---:|",
    ]
    for n, r in res["lengths"].items():
        on, off = r["cross_kv_per_vocab"]["auto"], r["cross_kv_per_vocab"]["off"]
        lines.append(
            f"| {int(n):,} | {on['median']:.3f} / {on['min']:.3f} | {off['median']:.3f} / {off['min']:.3f} "
            f"| **{off['median'] / on['median']:.2f}** |"
        )
    lines += ["", "Timings depend on the machine and its load at the time; see step_ablation.json.", ""]
    (a.out / "step_ablation.md").write_text("\n".join(lines))
    print((a.out / "step_ablation.md").read_text())


if __name__ == "__main__":
    main()
