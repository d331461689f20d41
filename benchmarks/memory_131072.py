"""A full training step (forward + backward + Adam update) at context 131,072 on the CPU.

The paper's longest copy task (``random_mirrored_131072``: 131,072 tokens, 1024 latents,
6 latent layers) at batch 1, with the memory features on: chunked cross-attention (query chunks
1024 x key chunks 4096, online softmax, per-chunk checkpointing), per-layer remat. The width is
reduced (default d=128, 4 heads) unless ``--d 1024`` (the paper's width, 89.8M parameters).

Records, in ``results/engine/memory_131072[_d<d>].json``: the compiled program's
``memory_analysis()`` and XLA FLOPs, the process's peak RSS (``ru_maxrss``), compile time and
step times, the analytic FLOPs, with git SHA, device, versions and the resolved config.

    .venv/bin/python benchmarks/memory_131072.py             # d=128 (the recorded figure)
    .venv/bin/python benchmarks/memory_131072.py --d 1024    # the paper's width (~11 GB, minutes)

Not a test: it takes minutes and GBs. The machine may be shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import SECTIONS  # noqa: E402
from repro.config import experiment_to_dict  # noqa: E402
from repro.dryrun import cost_flops, memory_stats  # noqa: E402
from repro.flops import human, train_step_flops  # noqa: E402
from repro.parallel import batch_sharding  # noqa: E402
from repro.runinfo import provenance, write_json_atomic  # noqa: E402
from repro.train.state import build  # noqa: E402


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> None:
    from repro.allocator import tune_allocator

    tune_allocator()  # process-wide, as cli.main does (repro/allocator.py); never on import repro
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=128, help="latent and input width (paper: 1024)")
    ap.add_argument("--heads", type=int, default=0, help="heads (default: d / 32, at most 16)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    ap.add_argument("--no-remat", action="store_true")
    ap.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    copy = SECTIONS["copy"]
    base = copy.presets["random_mirrored_131072"]
    heads = args.heads or min(16, max(1, args.d // 32))
    exp = dataclasses.replace(
        base,
        preset="random_mirrored_131072 (engine memory benchmark)",
        scale="custom",
        model=dataclasses.replace(
            base.model,
            d_model=args.d,
            d_input=None,
            cross_heads=heads,
            self_heads=heads,
            cross_head_group=min(base.model.cross_head_group, heads),
            attention_impl="chunked",
            remat=not args.no_remat,
            compute_dtype=args.compute_dtype,
        ),
        train=dataclasses.replace(base.train, batch_size=1, grad_accum=1),
    ).validate()
    m = exp.model
    print(
        f"context {m.max_context:,}, {m.num_latents} latents, d={m.d_model}, {m.num_layers} layers, "
        f"{heads} heads, batch 1, remat {m.remat}, {m.compute_dtype}",
        flush=True,
    )
    ds = copy.make_dataset(exp)
    rss0 = rss_bytes()

    t0 = time.perf_counter()
    run = build(exp)
    init_s = time.perf_counter() - t0
    sh = batch_sharding(run.mesh)

    def batch(step):
        return {k: jax.make_array_from_process_local_data(sh, v) for k, v in ds.train_batch(step, 1).items()}

    t0 = time.perf_counter()
    b0 = batch(0)
    compiled = run.steps.train.lower(run.params, run.opt_state, b0, np.int32(0)).compile()
    compile_s = time.perf_counter() - t0
    mem = memory_stats(compiled)
    print(f"compiled in {compile_s:.1f} s; memory_analysis: {mem}", flush=True)

    times = []
    for step in range(args.steps + 1):
        b = b0 if step == 0 else batch(step)
        t0 = time.perf_counter()
        run.params, run.opt_state, metrics = compiled(run.params, run.opt_state, b, np.int32(step))
        loss = float(metrics["loss"])
        jax.block_until_ready(run.params)
        times.append(time.perf_counter() - t0)
        print(f"step {step}: {times[-1]:.2f} s, loss {loss:.4f}, peak RSS {human(rss_bytes(), 'B')}", flush=True)
        assert bool(metrics["finite"])
    fl = train_step_flops(exp)
    steady = times[1:] or times
    result = {
        "what": "one full training step (forward + backward + Adam update) at context 131072, batch 1",
        "context": m.max_context,
        "num_latents": m.num_latents,
        "d_model": m.d_model,
        "num_layers": m.num_layers,
        "heads": heads,
        "batch_size": 1,
        "attention_impl": m.attention_impl,
        "query_chunk": m.query_chunk,
        "key_chunk": m.key_chunk,
        "remat": m.remat,
        "compute_dtype": m.compute_dtype,
        "num_params": run.num_params,
        "peak_rss_bytes": rss_bytes(),
        "peak_rss_gib": rss_bytes() / 2**30,
        "rss_before_build_bytes": rss0,
        "compiled_memory_bytes": mem,
        "compiled_peak_estimate_gib": mem["peak_estimate"] / 2**30 if mem else None,
        "init_seconds": init_s,
        "compile_seconds": compile_s,
        "step_seconds": times,
        "step_seconds_median_after_first": float(np.median(steady)),
        "analytic_flops_per_step": fl["step"],
        "analytic_gflops_per_second": fl["step"] / float(np.median(steady)) / 1e9,
        "xla_flops_per_step": cost_flops(compiled),
        "load_average_1_5_15min": os.getloadavg(),
        **provenance(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": experiment_to_dict(exp),
    }
    out = args.out or ROOT / "results" / "engine" / (
        "memory_131072.json" if args.d == 128 and not args.no_remat else f"memory_131072_d{args.d}.json"
    )
    write_json_atomic(out, result)
    print(
        f"peak RSS {result['peak_rss_gib']:.2f} GiB, compiled peak ~{result['compiled_peak_estimate_gib']:.2f} GiB, "
        f"step {result['step_seconds_median_after_first']:.2f} s -> {out}"
    )


if __name__ == "__main__":
    main()
