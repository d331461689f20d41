"""Does the data pipeline stall training? Step time with the real loader (the section's Pipeline
with the training loop's background prefetch and global-batch assembly) against the same jitted
step fed one constant, pre-assembled batch. Rounds alternate between the two, so machine load
affects both alike; the ratio is what counts (goal: within 5 %).

    python benchmarks/loader_overhead.py --out results/data [--steps 30] [--rounds 3]

Presets: the copy task's ``cpu`` (synthetic data generated per batch) and ``imagenet64/cpu`` (a
prepared on-disk corpus, memory-mapped; its demo corpus is built first if absent).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import SECTIONS  # noqa: E402
from repro.data.pipeline import Prefetcher  # noqa: E402
from repro.parallel import batch_sharding  # noqa: E402
from repro.runinfo import provenance, write_json_atomic, write_text_atomic  # noqa: E402
from repro.train.state import build  # noqa: E402

PRESETS = (("copy", "cpu"), ("imagenet64", "cpu"))


def measure(section: str, preset: str, steps: int, rounds: int) -> dict:
    sec = SECTIONS[section]
    exp = sec.presets[preset]
    pipe = sec.make_dataset(exp, log=print)
    run = build(exp)
    sh = batch_sharding(run.mesh)
    B = exp.train.batch_size

    def assemble(local):
        return {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}

    const = assemble(pipe.train_batch(0, B))
    params, opt = run.params, run.opt_state
    params, opt, m = run.steps.train(params, opt, const, np.int32(0))  # compile
    jax.block_until_ready(m["loss"])
    times = {"loader": [], "constant": []}
    step = 1
    for _ in range(rounds):
        for mode in ("loader", "constant"):
            with Prefetcher(lambda s: pipe.train_batch(s, B), step, step + steps) as pf:
                t0 = time.perf_counter()
                for s in range(step, step + steps):
                    batch = assemble(pf.get(s)) if mode == "loader" else const
                    params, opt, m = run.steps.train(params, opt, batch, np.int32(s))
                jax.block_until_ready(m["loss"])
                times[mode].append((time.perf_counter() - t0) / steps)
            step += steps
    # Host-side cost of one batch alone (no overlap), for context.
    t0 = time.perf_counter()
    for s in range(20):
        pipe.train_batch(10_000 + s, B)
    host = (time.perf_counter() - t0) / 20
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "section": section,
        "preset": preset,
        "dataset": pipe.source.info.name,
        "batch": B,
        "context": exp.model.max_context,
        "steps_per_round": steps,
        "rounds": rounds,
        "step_seconds": times,
        "median_step_seconds": med,
        "loader_over_constant": med["loader"] / med["constant"],
        "host_batch_seconds": host,
        "data_hash": pipe.source.data_hash(exp.data.eval_split, exp.data.eval_examples),
    }


def main() -> None:
    from repro.allocator import tune_allocator

    tune_allocator()  # process-wide, as cli.main does (repro/allocator.py); never on import repro
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/data"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.steps < 1 or a.rounds < 1:
        sys.exit("error: --steps and --rounds must be >= 1")
    a.out.mkdir(parents=True, exist_ok=True)
    rows = [measure(s, p, a.steps, a.rounds) for s, p in PRESETS]
    import os

    record = {
        "what": "step time with the real loader vs a constant batch (benchmarks/loader_overhead.py)",
        "command": " ".join(["python", "benchmarks/loader_overhead.py", *sys.argv[1:]]),
        "rows": rows,
        "load_average": os.getloadavg(),
        **provenance(),
    }
    write_json_atomic(a.out / "loader_overhead.json", record)
    lines = [
        "# Data loader vs constant batch (training step time)\n",
        f"\n{record['date']}, git {record['git_sha']}, {record['device']['kind']} x{record['device']['count']}, "
        f"load average {record['load_average'][0]:.2f}. Rounds alternate loader / constant; medians.\n\n",
        "| preset | data | batch x context | loader s/step | constant s/step | ratio | host batch s |\n",
        "|---|---|---|---|---|---|---|\n",
    ]
    for r in rows:
        m = r["median_step_seconds"]
        lines.append(
            f"| {r['section']}/{r['preset']} | {r['dataset']} | {r['batch']} x {r['context']} | {m['loader']:.4f} | "
            f"{m['constant']:.4f} | **{r['loader_over_constant']:.3f}** | {r['host_batch_seconds']:.4f} |\n"
        )
    write_text_atomic(a.out / "loader_overhead.md", "".join(lines))
    print("".join(lines))


if __name__ == "__main__":
    main()
