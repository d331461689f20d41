"""Benchmark: seconds per generated token, KV-cached decoding vs recomputing everything.

    python benchmarks/sampling.py [--contexts 1024 4096 16384] [--batches 1 8] [--out results/bench]

A small Perceiver AR (d = 128, 2 self-attention layers, 4 heads, M = 128 latents, rotary) with
random weights generates after a prompt that fills the context window. Both modes run the same
jitted loop (``repro/sample/sampler.py``):

  cached     prefill once, then one ``decode_step`` per token; a cache reset (a full forward
             refilling M / 2 latents) every M / 2 tokens, as the paper; its cost is included.
  recompute  a full forward over the last L inputs with all M latents for every token (what a
             sampler without a cache does).

Per-token time = (time for 1 + K tokens - time for 1 token) / K, after compilation, so the
prompt's prefill is excluded and, for the cached mode, K is a multiple of the reset period (the
resets are amortised exactly). With batch B, one step advances B samples by one token each
(``ms/step``); tokens/s counts all B. Writes ``sampling.json`` (numbers, machine, git SHA) and
``sampling.md`` under ``--out``. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repro.config import ModelConfig  # noqa: E402
from repro.data.tokens import NUM_RESERVED, SOS_ID  # noqa: E402
from repro.model import PerceiverAR, count_params  # noqa: E402
from repro.runinfo import provenance  # noqa: E402
from repro.sample.sampler import SampleConfig, generate  # noqa: E402

D, LAYERS, HEADS, M, VOCAB = 128, 2, 4, 128, 259


def model_for(L: int) -> PerceiverAR:
    cfg = ModelConfig(
        vocab_size=VOCAB, max_context=L, num_latents=M, d_model=D, num_layers=LAYERS, cross_heads=HEADS,
        self_heads=HEADS, dropout=0.0, position_encoding="rotary", final_init_zeros=False,
    )  # fmt: skip
    return PerceiverAR(cfg, rngs=nnx.Rngs(0))


def timed(model, prompts, n, cfg, repeats: int) -> float:
    generate(model, prompts, n, cfg)  # compile
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(model, prompts, n, SampleConfig(**{**vars(cfg), "seed": r + 1}))
        best = min(best, time.perf_counter() - t0)
    return best


def per_token(model, prompts, k: int, use_cache: bool, repeats: int) -> dict:
    # stop_at_eos=False: random weights may emit EOS; every run generates exactly its tokens.
    cfg = SampleConfig(temperature=1.0, seed=0, use_cache=use_cache, stop_at_eos=False)
    t1 = timed(model, prompts, 1, cfg, repeats)
    tk = timed(model, prompts, 1 + k, cfg, repeats)
    step = (tk - t1) / k
    return {"seconds_per_token": step, "tokens_per_second": len(prompts) / step, "tokens_timed": k,
            "t_1_token": t1, "t_1_plus_k": tk}  # fmt: skip


def main() -> None:
    from repro.allocator import tune_allocator

    tune_allocator()  # process-wide, as cli.main does (repro/allocator.py); never on import repro
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1], help="samples generated together")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    rows = []
    for L in args.contexts:
        model = model_for(L)
        rng = np.random.default_rng(0)
        for B in args.batches:
            prompts = [
                np.concatenate([[SOS_ID], rng.integers(NUM_RESERVED, VOCAB, L - 1)]).astype(np.int32) for _ in range(B)
            ]
            t0 = time.perf_counter()
            cached = per_token(model, prompts, 2 * (M // 2), True, args.repeats)  # two reset periods
            recompute = per_token(model, prompts, 8 if L * B >= 16384 else 16, False, args.repeats)
            row = {
                "context": L,
                "batch": B,
                "cached": cached,
                "recompute": recompute,
                "ratio_cached_over_recompute": cached["seconds_per_token"] / recompute["seconds_per_token"],
                "speedup": recompute["seconds_per_token"] / cached["seconds_per_token"],
                "wall_seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(
                f"L={L:>6} B={B}: cached {cached['seconds_per_token'] * 1e3:8.2f} ms/step, "
                f"recompute {recompute['seconds_per_token'] * 1e3:8.2f} ms/step, "
                f"ratio {row['ratio_cached_over_recompute']:.4f} (x{row['speedup']:.1f})",
                flush=True,
            )

    result = {
        "benchmark": "sampling: seconds per generated token, KV cache vs recompute",
        "model": {
            "d_model": D,
            "num_layers": LAYERS,
            "heads": HEADS,
            "num_latents": M,
            "vocab_size": VOCAB,
            "position_encoding": "rotary",
            "params": count_params(model_for(args.contexts[0])),
        },  # fmt: skip
        "sampling": {"batches": args.batches, "reset_fill": M // 2, "temperature": 1.0, "prompt": "fills the context"},
        "method": "(t(1 + K tokens) - t(1 token)) / K, best of --repeats runs after compilation",
        "repeats": args.repeats,
        "goal": "cached <= 1/20 of recompute at 4k context",
        "rows": rows,
        **provenance(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sampling.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Sampling speed: KV cache vs recompute",
        "",
        f"Model: d={D}, {LAYERS} layers, {HEADS} heads, M={M} latents, rotary, random weights; "
        f"cache reset every {M // 2} tokens (refill {M // 2} latents), cost included. A step advances "
        "every sample of the batch by one token.",
        f"Machine: {result['device']['kind']} ({result['device']['platform']}, {result['device']['cpus']} CPUs), "
        f"git {result['git_sha']}, {result['date']}. Produced by "
        f"`python benchmarks/sampling.py --batches {' '.join(map(str, args.batches))} --repeats {args.repeats}`.",
        "",
        "| context | batch | cached (ms/step) | cached (tokens/s) | recompute (ms/step) | cached / recompute "
        "| speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['context']:,} | {r['batch']} | {r['cached']['seconds_per_token'] * 1e3:.2f} | "
            f"{r['cached']['tokens_per_second']:,.0f} | {r['recompute']['seconds_per_token'] * 1e3:.2f} | "
            f"{r['ratio_cached_over_recompute']:.4f} | {r['speedup']:.1f}x |"
        )
    at4k = [r for r in rows if r["context"] == 4096 and r["batch"] == 1]
    if at4k:
        ok = at4k[0]["ratio_cached_over_recompute"] <= 1 / 20
        lines += ["", f"Goal (cached <= 1/20 of recompute at 4k, batch 1): {'met' if ok else 'NOT met'}."]
    lines += ["", "Timings depend on the machine and on its load at the time; see sampling.json."]
    (args.out / "sampling.md").write_text("\n".join(lines) + "\n")
    print(f"written: {args.out / 'sampling.json'}, {args.out / 'sampling.md'}")


if __name__ == "__main__":
    main()
