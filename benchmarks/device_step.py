"""Training-step time, TFLOP/s and model FLOPs utilisation of the paper models on an accelerator.

Run by ``benchmarks/device_check.sh`` (not a test). On the GPU it times, after a measured bf16
matmul peak:

* the ImageNet 64x64 paper model (``imagenet64/paper``: context 12,416, 1,024 latents, d=1024)
  with 4 and 8 of its 60 latent layers, at the largest batch of ``--batches`` whose compiled
  peak fits ``--budget-gib``; the 4-layer one also with dense attention (the fused kernel's gain);
* the copy task's ``random_mirrored_131072`` preset (6 layers, 1,024 latents, d=1024) at batch 1.

Every step is the real jitted, donated train step (``repro.bench._Prepared``: Adam, the paper
preset's ``auto`` settings resolved for the backend: bfloat16 compute, fused attention on a GPU).
TFLOP/s counts the analytic model FLOPs (``repro/flops.py``: forward + backward, + the remat /
chunked recompute when on) per second; MFU divides it by the chip's peak: the bf16 dense peak
given by ``--peak-tflops`` (H100 / H200 SXM: 989) and, beside it, the matmul peak measured here.

    python3 benchmarks/device_step.py --out results/device
    python3 benchmarks/device_step.py --tiny --out runs/device_tiny   # the same code path at toy sizes (CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def matmul_peak(n: int, reps: int = 10) -> float:
    """TFLOP/s of an n x n x n bf16 matmul (mean of ``reps`` after 3 warm-ups)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: x @ y)
    for _ in range(3):
        f(a, b).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        out = f(a, b)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def variants(tiny: bool, batches: list[int]) -> list[tuple[str, object, list[int]]]:
    from experiments import SECTIONS

    im = SECTIONS["imagenet64"].presets["paper"]
    cp = SECTIONS["copy"].presets["random_mirrored_131072"]
    if tiny:  # toy sizes: the same code path, seconds on a CPU
        toy = dict(num_latents=64, d_model=64, cross_heads=4, self_heads=4)
        im = _with(im, max_context=256, attention_impl="fused", **toy)  # XLA here: the fused path runs
        cp = _with(cp, max_context=512, num_layers=2, **toy)
    out = []
    for layers in (4, 8):
        out.append((f"imagenet64_paper_{layers}layers", _with(im, num_layers=layers), batches))
    out.append(("imagenet64_paper_4layers_dense_attention", _with(im, num_layers=4, attention_impl="dense"), batches))
    out.append(("copy_random_mirrored_131072", cp, [1]))
    return out


def _with(exp, **model):
    return dataclasses.replace(exp, model=dataclasses.replace(exp.model, **model))


def time_one(name: str, exp, batches: list[int], budget: float, steps: int) -> dict:
    from repro.bench import _Prepared
    from repro.flops import train_step_flops
    from repro.model import attention

    tried = []
    for b in batches:
        attention.FUSED_TRACED.clear()
        e = dataclasses.replace(exp, preset=name, train=dataclasses.replace(exp.train, batch_size=b, grad_accum=1))
        t0 = time.perf_counter()
        try:
            prep = _Prepared(e, budget, lambda msg: print(msg, flush=True))
        except Exception as err:  # an out-of-memory compile or kernel refusal: try a smaller batch
            tried.append({"batch": b, "error": f"{type(err).__name__}: {str(err)[:300]}"})
            print(f"  {name} batch {b}: {tried[-1]['error']}", flush=True)
            continue
        if prep.skipped:
            tried.append({"batch": b, "skipped": prep.skipped})
            continue
        times = [prep.step() for _ in range(steps)]
        fl = train_step_flops(e)
        med = statistics.median(times)
        row = {
            "name": name,
            "batch": b,
            "num_layers": e.model.num_layers,
            "max_context": e.model.max_context,
            "num_latents": e.model.num_latents,
            "compute_dtype": e.model.resolved_dtype(),
            "attention_impl": e.model.resolved_attention(),
            "fused_traced": sorted(f"{i}/{d}" for i, d in attention.FUSED_TRACED),  # what really ran
            "params": prep.num_params,
            "step_seconds_median": med,
            "step_seconds_all": times,
            "compile_seconds": prep.compile_seconds,
            "analytic_flops_per_step": fl["step"],
            "xla_flops_per_step": prep.xla_flops,
            "achieved_tflops": fl["step"] / med / 1e12,
            "target_tokens_per_second": fl["target_tokens_per_step"] / med,
            "compiled_memory": prep.memory,
            "setup_seconds": time.perf_counter() - t0,
            "tried": tried,
        }
        prep.release()
        print(f"  {name} batch {b}: {med * 1e3:.1f} ms/step, {row['achieved_tflops']:.1f} TFLOP/s, "
              f"fused kernels {row['fused_traced']}", flush=True)  # fmt: skip
        return row
    return {"name": name, "skipped": "no batch fitted", "tried": tried}


def main() -> None:
    from repro.allocator import tune_allocator

    tune_allocator()  # process-wide, as cli.main does (repro/allocator.py); never on import repro
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batches", default="16,8,4,2,1", help="batch sizes to try, largest first")
    p.add_argument("--budget-gib", type=float, default=120.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the chip (H200 SXM: 989)")
    p.add_argument("--tiny", action="store_true", help="toy sizes (checks the script on a CPU)")
    a = p.parse_args()
    from repro.runinfo import provenance, write_json_atomic

    print(f"backend {jax.default_backend()}, devices {jax.devices()}", flush=True)
    measured = matmul_peak(512 if a.tiny else 8192)
    print(f"bf16 matmul peak measured: {measured:.1f} TFLOP/s", flush=True)
    rows = []
    for name, exp, batches in variants(a.tiny, [int(x) for x in a.batches.split(",")]):
        row = time_one(name, exp, batches, a.budget_gib * 2**30, a.steps)
        if "achieved_tflops" in row:
            row["mfu_vs_spec_peak"] = row["achieved_tflops"] / a.peak_tflops
            row["mfu_vs_measured_matmul"] = row["achieved_tflops"] / measured
        rows.append(row)
    res = {
        "rows": rows,
        "matmul_peak_tflops_measured": measured,
        "peak_tflops_spec": a.peak_tflops,
        "tiny": a.tiny,
        **provenance("benchmarks/device_step.py " + " ".join(sys.argv[1:])),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.out / "device_step.json", res)
    lines = [
        "# Paper-model training steps on an accelerator (benchmarks/device_step.py)",
        "",
        f"git {res['git_sha']}, {res['date']}, backend {jax.default_backend()}; bf16 matmul peak measured "
        f"{measured:.0f} TFLOP/s, spec peak {a.peak_tflops:.0f}. Analytic model FLOPs per step / median step time.",
        "",
        "| model | batch | compute | attention (kernels traced) | step (ms) | TFLOP/s | MFU (spec) | MFU (matmul) |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "achieved_tflops" not in r:
            lines.append(f"| {r['name']} | — | | | not run: {r['skipped']} | | | |")
            continue
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['compute_dtype']} | {r['attention_impl']} "
            f"({', '.join(r['fused_traced']) or '-'}) | "
            f"{r['step_seconds_median'] * 1e3:.1f} | {r['achieved_tflops']:.1f} | {r['mfu_vs_spec_peak']:.1%} | "
            f"{r['mfu_vs_measured_matmul']:.1%} |"
        )
    (a.out / "device_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"written": str(a.out)}))


if __name__ == "__main__":
    main()
