"""Evaluation throughput against training throughput, same model, one run (not a test).

A cpu-scale Perceiver AR at context 4096 (the ``pg19/cpu`` model: 128 latents, d=256, 3 latent
layers, rotary, vocabulary 4,099; f32) on random-token documents:

1. **train**: target tokens per second of the compiled, donated train step (B x M targets per step).
2. **eval, blocked:M**: target tokens per second of ``repro.eval.evaluate`` over whole documents
   (``EvalBatches``: every target scored once, windows of L inputs), as shipped (windows cut on a
   background thread, the next batch dispatched before the last is read back) and, in the same
   process, a plain synchronous loop over the same batches (cut, run, read back, repeat).
3. **stride1, shared head**: one forward per target, plain vs the exact shared head window
   (``repro/eval/protocols.py``) on documents of 256 tokens (T = 255 targets: 255 vs 128 windows).

    .venv/bin/python benchmarks/eval_throughput.py --out results/bench

Writes ``eval_throughput.json`` / ``.md``; timings depend on the machine and its load (recorded);
the ratios come from one stretch of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def experiment(L: int, batch: int):
    from experiments import SECTIONS

    e = SECTIONS["pg19"].presets["cpu"]
    return dataclasses.replace(
        e, preset=f"cpu_L{L}", model=dataclasses.replace(e.model, max_context=L),
        train=dataclasses.replace(e.train, batch_size=batch),
    )  # fmt: skip


def documents(n: int, length: int, vocab: int, seed: int):
    from repro.data.tokens import EOS_ID, SOS_ID
    from repro.eval.protocols import Document

    rng = np.random.default_rng(seed)
    return [
        Document(np.concatenate([[SOS_ID], rng.integers(3, vocab, length - 2), [EOS_ID]]).astype(np.int32))
        for _ in range(n)
    ]


def plain_loop(eval_step, params, batches, batch_size: int) -> float:
    """The synchronous loop: cut a batch, run it, read its results back, repeat. Returns NLL sum."""
    from repro.eval.evaluate import _pad_batch

    total = 0.0
    for raw in batches:
        batch, n = _pad_batch(raw, batch_size)
        nll, _, mask = (np.asarray(a, np.float64)[:n] for a in eval_step(params, batch))
        total += float((nll * mask).sum())
    return total


def main() -> None:
    from repro.allocator import tune_allocator

    tune_allocator()  # process-wide, as cli.main does (repro/allocator.py); never on import repro
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--docs", type=int, default=4, help="documents of --doc-length tokens for blocked:M")
    p.add_argument("--doc-length", type=int, default=16384)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    a = p.parse_args()
    from repro.bench import _Prepared
    from repro.eval.evaluate import evaluate
    from repro.eval.protocols import EvalBatches, parse_protocol
    from repro.runinfo import provenance, write_json_atomic
    from repro.train.state import build

    exp = experiment(a.context, a.batch)
    L, M, B = exp.model.max_context, exp.model.num_latents, a.batch
    load_before = os.getloadavg()
    prepared = _Prepared(exp, float("inf"), lambda msg: print(msg, flush=True))
    prepared.step()
    train_times = [prepared.step() for _ in range(a.train_steps)]
    prepared.release()
    train_step = statistics.median(train_times)
    train_tps = B * M / train_step
    print(f"train: {train_step:.3f} s/step, {train_tps:,.0f} target tokens/s", flush=True)

    run = build(exp)
    params, eval_step = run.params, run.steps.eval
    docs = documents(a.docs, a.doc_length, exp.model.vocab_size - 1, seed=0)
    proto = parse_protocol(f"blocked:{M}", M)

    def batches():
        return EvalBatches(docs, proto, L, M, B, share_head=True)

    evaluate(eval_step, params, [next(iter(batches()))], B, info={})  # compile
    targets = batches().info["targets"]
    shipped, plain = [], []
    for _ in range(a.rounds):  # interleaved
        t = time.perf_counter()
        m = evaluate(eval_step, params, batches(), B)
        shipped.append(time.perf_counter() - t)
        t = time.perf_counter()
        total = plain_loop(eval_step, params, batches(), B)
        plain.append(time.perf_counter() - t)
        assert abs(total - m["total_nll_nats"]) <= 1e-6 * abs(total)  # the same numbers
    eval_tps, plain_tps = targets / min(shipped), targets / min(plain)
    print(f"eval blocked:{M}: {eval_tps:,.0f} target tokens/s (plain loop {plain_tps:,.0f})", flush=True)

    short = documents(8, 256, exp.model.vocab_size - 1, seed=1)
    s1 = parse_protocol("stride1", M)
    stride = {}
    for share in (False, True, False, True):
        b = EvalBatches(short, s1, L, M, B, share_head=share)
        t = time.perf_counter()
        m = evaluate(eval_step, params, b, B)
        dt = time.perf_counter() - t
        key = "shared_head" if share else "plain"
        prev = stride.get(key)
        if prev is None or dt < prev["seconds"]:
            stride[key] = {"seconds": dt, "windows": b.info["windows"], "nats_per_token": m["nats_per_token"]}
    assert abs(stride["plain"]["nats_per_token"] - stride["shared_head"]["nats_per_token"]) < 1e-5
    speedup = stride["plain"]["seconds"] / stride["shared_head"]["seconds"]
    print(f"stride1 on 256-token documents: shared head {speedup:.2f}x faster", flush=True)

    res = {
        "config": {
            "context": L,
            "latents": M,
            "batch": B,
            "d_model": exp.model.d_model,
            "num_layers": exp.model.num_layers,
            "vocab_size": exp.model.vocab_size,
            "docs": a.docs,
            "doc_length": a.doc_length,
        },  # fmt: skip
        "train_step_seconds": train_times,
        "train_target_tokens_per_second": train_tps,
        "eval_targets": targets,
        "eval_seconds_shipped": shipped,
        "eval_seconds_plain_loop": plain,
        "eval_target_tokens_per_second": eval_tps,
        "eval_plain_loop_target_tokens_per_second": plain_tps,
        "eval_over_train": eval_tps / train_tps,
        "shipped_over_plain_loop": eval_tps / plain_tps,
        "stride1": stride,
        "stride1_shared_head_speedup": speedup,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        **provenance("benchmarks/eval_throughput.py " + " ".join(sys.argv[1:])),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.out / "eval_throughput.json", res)
    md = [
        "# Evaluation throughput vs training throughput (issue 16 §1)",
        "",
        f"`pg19/cpu` model at context {L} ({M} latents, d={exp.model.d_model}, {exp.model.num_layers} latent layers, "
        f"f32), batch {B}, random-token documents. git {res['git_sha']}, {res['date']}, "
        f"{res['device']['platform']} ({res['device']['cpus']} CPUs), load average before "
        f"{load_before[0]:.2f}. Produced by `benchmarks/eval_throughput.py`.",
        "",
        "| what | target tokens / s | ratio |",
        "|---|---:|---:|",
        f"| training step (forward + backward + Adam), B x M targets per step | {train_tps:,.0f} | 1 |",
        f"| evaluation `blocked:{M}`, as shipped ({a.docs} documents x {a.doc_length:,} tokens) | {eval_tps:,.0f} | "
        f"{eval_tps / train_tps:.2f}x training |",
        f"| evaluation, plain synchronous loop (same batches) | {plain_tps:,.0f} | "
        f"shipped / plain {eval_tps / plain_tps:.2f} |",
        "",
        f"`stride1` on 8 documents of 256 tokens: plain {stride['plain']['windows']} windows in "
        f"{stride['plain']['seconds']:.2f} s, shared head {stride['shared_head']['windows']} windows in "
        f"{stride['shared_head']['seconds']:.2f} s: **{speedup:.2f}x**, same nats per token "
        f"({stride['plain']['nats_per_token']:.6f}).",
    ]
    (a.out / "eval_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
