"""``repro bench``: training cost of Perceiver AR vs the Transformer baseline across context lengths.

For each context length N, both models are built with the suite's own training engine
(``repro.train.state.build``: same blocks, positions, optimiser and jitted, donated train step);
the Transformer is ``repro.baseline.as_transformer`` (M = N, L + 1 layers). Per model:

1. lower and compile the train step; record XLA's ``memory_analysis()`` (the compiled program's
   peak estimate) and ``cost_analysis()`` FLOPs. A model whose estimate exceeds the memory
   budget is **not run** and reported as ``over_budget`` (it would not fit, or would swap);
2. initialise, run one warm-up step;
3. time ``repeats`` steps, **interleaved** with the other model at the same N (model A step, model
   B step, A, B, ...), so their ratio comes from one stretch of machine load; median.

Reported per (model, N): step time, target tokens / s (Perceiver AR trains on M targets per
sequence, the Transformer on N), analytic FLOPs per step (``repro/flops.py``) and achieved
FLOP/s, its fraction of this machine's measured f32 matmul peak (a jitted 2048^2 matmul, median
of a few runs, measured in the same process), compiled memory, and the process's ru_maxrss so far.
Outputs: ``training.json`` (+ provenance: git SHA, device, versions, date, load average),
``training.md`` and ``training_step_time.png`` (log-log step time vs N). Not a test: timings
depend on the machine and its load.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from repro.baseline import as_transformer
from repro.config import DataConfig, Experiment, MeshConfig, ModelConfig, OptimConfig, TrainConfig
from repro.flops import train_step_flops

MODELS = ("perceiver_ar", "transformer")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    lengths: tuple[int, ...] = (1024, 2048, 4096, 8192)
    d_model: int = 256
    num_latents: int = 256
    num_layers: int = 4  # Perceiver AR: 1 cross-attend + L latent layers; Transformer: L + 1 layers
    heads: int = 4
    batch: int = 2
    repeats: int = 3
    memory_budget_gb: float = 12.0
    models: tuple[str, ...] = MODELS
    vocab_size: int = 259
    matmul_size: int = 2048  # the square f32 matmul that measures the machine's peak


def experiment(bc: BenchConfig, model: str, n: int) -> Experiment:
    """The benchmarked experiment: rotary positions, f32, dense attention, no dropout, Adam."""
    m = ModelConfig(
        vocab_size=bc.vocab_size, max_context=n, num_latents=min(bc.num_latents, n), d_model=bc.d_model,
        num_layers=bc.num_layers, cross_heads=bc.heads, self_heads=bc.heads, dropout=0.0,
        position_encoding="rotary",
    )  # fmt: skip
    exp = Experiment(
        section="bench", preset=f"perceiver_ar_{n}", scale="custom", model=m,
        data=DataConfig(), optim=OptimConfig(warmup_steps=0),
        train=TrainConfig(steps=1, batch_size=bc.batch), mesh=MeshConfig(data=1),
    ).validate()  # fmt: skip
    return as_transformer(exp, preset=f"transformer_{n}") if model == "transformer" else exp


def matmul_peak(n: int = 2048, runs: int = 5) -> dict[str, float]:
    """This machine's f32 matmul throughput: a jitted n x n matmul, median of ``runs``."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), jnp.float32)
    b = jax.random.normal(k2, (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"n": n, "runs": runs, "median_seconds": med, "flops_per_second": 2 * n**3 / med}


def _batch(exp: Experiment, rng: np.random.Generator) -> dict[str, np.ndarray]:
    m, B = exp.model, exp.train.batch_size
    L, M = m.max_context, m.num_latents
    seq = rng.integers(3, m.vocab_size, size=(B, L + 1)).astype(np.int32)
    # One column per position dimension, each inside its table (e.g. ImageNet's (x, y, channel)).
    sizes = m.position_table_sizes or (L + 1,)
    pos_LxP = np.stack([np.arange(L, dtype=np.int32) % n for n in sizes], axis=-1)
    pos = np.broadcast_to(pos_LxP[None], (B, L, len(sizes))).copy()
    return {"inputs": seq[:, :L], "targets": seq[:, L + 1 - M :], "positions": pos}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class _Prepared:
    """A compiled train step with its state, ready to time (or a reason it was not run)."""

    def __init__(self, exp: Experiment, budget_bytes: float, log):
        from repro.dryrun import abstract_batch, cost_flops, memory_stats
        from repro.train.state import build

        self.exp, self.times, self.skipped = exp, [], None
        run = build(exp, init=False)
        t0 = time.perf_counter()
        step = jax.ShapeDtypeStruct((), jnp.int32)
        lowered = run.steps.train.lower(
            run.abstract["params"], run.abstract["opt_state"], abstract_batch(exp, run.mesh), step
        )
        self.compiled = lowered.compile()
        self.compile_seconds = time.perf_counter() - t0
        self.memory = memory_stats(self.compiled)
        self.xla_flops = cost_flops(self.compiled)
        self.num_params = run.num_params
        peak = (self.memory or {}).get("peak_estimate", 0)
        if peak > budget_bytes:
            self.skipped = (
                f"over_budget: compiled peak estimate {peak / 2**30:.1f} GiB > {budget_bytes / 2**30:.1f} GiB"
            )
            log(f"  {exp.preset}: {self.skipped}; not run")
            return
        fresh = build(exp)
        self.params, self.opt_state = fresh.params, fresh.opt_state
        self.batch = {k: jnp.asarray(v) for k, v in _batch(exp, np.random.default_rng(0)).items()}
        t0 = time.perf_counter()
        self.step()  # warm-up
        self.first_step_seconds = time.perf_counter() - t0
        log(f"  {exp.preset}: compiled in {self.compile_seconds:.1f} s, first step {self.first_step_seconds:.2f} s")

    def step(self) -> float:
        t = time.perf_counter()
        self.params, self.opt_state, m = self.compiled(self.params, self.opt_state, self.batch, np.int32(0))
        jax.block_until_ready((self.params, m))
        return time.perf_counter() - t

    def release(self) -> None:
        for k in ("params", "opt_state", "batch", "compiled"):
            self.__dict__.pop(k, None)


def summarise(rows: list[dict[str, Any]], lengths) -> tuple[list[dict], list[dict]]:
    """Measured PAR / Transformer ratios per N; and, for a model not run at some N (over the
    memory budget), an EXTRAPOLATED step time: its analytic FLOPs at that N divided by the FLOP/s
    it achieved at the largest N it did run (labelled as such; not a measurement)."""
    ratios, extrapolated = [], []
    for n in lengths:
        by = {r["model"]: r for r in rows if r["context"] == n}
        a, b = by.get("perceiver_ar", {}), by.get("transformer", {})
        if "step_seconds" in a and "step_seconds" in b:
            ratios.append({
                "context": n,
                "step_time_par_over_transformer": a["step_seconds"] / b["step_seconds"],
                "time_per_target_token_par_over_transformer": (a["step_seconds"] / a["target_tokens_per_step"])
                / (b["step_seconds"] / b["target_tokens_per_step"]),
            })  # fmt: skip
    for r in rows:
        if "step_seconds" in r:
            continue
        ran = [x for x in rows if x["model"] == r["model"] and "step_seconds" in x]
        if not ran:
            continue
        ref = max(ran, key=lambda x: x["context"])
        est = r["analytic_flops_per_step"] / ref["achieved_flops_per_second"]
        e = {"model": r["model"], "context": r["context"], "extrapolated_step_seconds": est,
             "from_context": ref["context"], "status": r["status"]}  # fmt: skip
        other = next((x for x in rows if x["context"] == r["context"] and x is not r and "step_seconds" in x), None)
        if other is not None:
            par, tr = (other["step_seconds"], est) if r["model"] == "transformer" else (est, other["step_seconds"])
            e["step_time_par_over_transformer"] = par / tr
        extrapolated.append(e)
    return ratios, extrapolated


def run_bench(bc: BenchConfig, log=print) -> dict[str, Any]:
    from repro.runinfo import device_info, git_sha, now, versions

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    peak = matmul_peak(bc.matmul_size)
    log(f"f32 matmul peak ({bc.matmul_size}^2, median of 5): {peak['flops_per_second'] / 1e9:.1f} GFLOP/s")
    budget = bc.memory_budget_gb * 2**30
    rows: list[dict[str, Any]] = []
    for n in bc.lengths:
        log(f"N = {n}")
        prepared = {m: _Prepared(experiment(bc, m, n), budget, log) for m in bc.models}
        live = [p for p in prepared.values() if p.skipped is None]
        for _ in range(bc.repeats):  # interleaved: A, B, A, B, ...
            for p in live:
                p.times.append(p.step())
        for model, p in prepared.items():
            e = p.exp
            fl = train_step_flops(e)
            row: dict[str, Any] = {
                "model": model, "context": n, "num_latents": e.model.num_latents,
                "layers": e.model.num_layers + 1, "d_model": e.model.d_model, "heads": e.model.self_heads,
                "batch": e.train.batch_size, "params": p.num_params,
                "target_tokens_per_step": fl["target_tokens_per_step"],
                "analytic_flops_per_step": fl["step"], "xla_flops_per_step": p.xla_flops,
                "compiled_memory": p.memory, "compile_seconds": p.compile_seconds, "status": p.skipped or "ok",
            }  # fmt: skip
            if p.skipped is None:
                med = statistics.median(p.times)
                row.update(
                    step_seconds=med, step_seconds_all=p.times, first_step_seconds=p.first_step_seconds,
                    target_tokens_per_second=fl["target_tokens_per_step"] / med,
                    sequences_per_second=e.train.batch_size / med,
                    achieved_flops_per_second=fl["step"] / med,
                    fraction_of_matmul_peak=fl["step"] / med / peak["flops_per_second"],
                    ru_maxrss_gb_so_far=_rss_gb(),
                )  # fmt: skip
                log(
                    f"  {model:>12}: {med:.3f} s/step, {row['target_tokens_per_second']:,.0f} target tok/s, "
                    f"{row['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s "
                    f"({row['fraction_of_matmul_peak']:.0%} of peak)"
                )
            p.release()
            rows.append(row)
    ratios, extrapolated = summarise(rows, bc.lengths)
    return {
        "benchmark": "training step time: Perceiver AR vs decoder-only Transformer (M = N) across context lengths",
        "config": dataclasses.asdict(bc),
        "method": "per model and N: compile (memory_analysis, cost_analysis), skip if the compiled peak estimate "
        "exceeds the memory budget, 1 warm-up step, then `repeats` steps interleaved between the models; "
        "median. FLOPs: analytic, as the code runs them (repro/flops.py; cross-attend keys / values per "
        "vocabulary entry where eligible, ModelConfig.cross_kv_per_vocab). f32, dense attention, rotary, Adam, "
        "batch of random tokens.",
        "matmul_peak": peak,
        "rows": rows,
        "ratios": ratios,
        "extrapolated": extrapolated,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": time.perf_counter() - t_start,
        "git_sha": git_sha(),
        "device": device_info(),
        "versions": versions(),
        "date": now(),
    }


def _fmt_bytes(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def markdown(res: dict[str, Any]) -> str:
    bc, pk = res["config"], res["matmul_peak"]
    dev = res["device"]
    lines = [
        "# Training cost: Perceiver AR vs Transformer across context lengths",
        "",
        f"Models: d={bc['d_model']}, {bc['heads']} heads, Perceiver AR with M={bc['num_latents']} latents "
        f"(1 cross-attend + {bc['num_layers']} latent layers) vs the Transformer baseline "
        f"({bc['num_layers'] + 1} causal layers over all N, repro/baseline.py); batch {bc['batch']}, f32, "
        f"rotary, dense attention, Adam. Median of {bc['repeats']} interleaved steps after a warm-up.",
        f"Machine: {dev['platform']} ({dev['kind']}, {dev['cpus']} CPUs), measured f32 matmul peak "
        f"{pk['flops_per_second'] / 1e9:.1f} GFLOP/s ({pk['n']}^2, median of {pk['runs']}). "
        f"Load average before / after: "
        f"{', '.join(f'{x:.2f}' for x in res['load_average_before'])} / "
        f"{', '.join(f'{x:.2f}' for x in res['load_average_after'])}.",
        f"git {res['git_sha']}, {res['date']}. Produced by `repro bench`.",
        "",
        "| model | N | M | step (s) | target tok/s | GFLOP/step (analytic, as run) | GFLOP/s | of matmul peak "
        "| compiled peak mem | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        mem = (r.get("compiled_memory") or {}).get("peak_estimate")
        if "step_seconds" in r:
            cells = [
                f"{r['step_seconds']:.3f}", f"{r['target_tokens_per_second']:,.0f}",
                f"{r['analytic_flops_per_step'] / 1e9:.1f}", f"{r['achieved_flops_per_second'] / 1e9:.1f}",
                f"{r['fraction_of_matmul_peak']:.0%}",
            ]  # fmt: skip
        else:
            cells = ["-", "-", f"{r['analytic_flops_per_step'] / 1e9:.1f}", "-", "-"]
        lines.append(
            f"| {r['model']} | {r['context']:,} | {r['num_latents']:,} | " + " | ".join(cells)
            + f" | {_fmt_bytes(mem)} | {r['status']} |"
        )  # fmt: skip
    if res["ratios"]:
        lines += [
            "",
            "| N | step time PAR / Transformer | time per target token PAR / Transformer |",
            "|---:|---:|---:|",
        ]
        for q in res["ratios"]:
            lines.append(
                f"| {q['context']:,} | {q['step_time_par_over_transformer']:.4f} "
                f"| {q['time_per_target_token_par_over_transformer']:.3f} |"
            )
    for e in res.get("extrapolated", []):
        line = (
            f"\n**Extrapolated, not measured:** {e['model']} at N={e['context']:,} ({e['status'].split(':')[0]}) "
            f"would take ~{e['extrapolated_step_seconds']:.1f} s per step (its analytic FLOPs at the FLOP/s it "
            f"achieved at N={e['from_context']:,})"
        )
        if "step_time_par_over_transformer" in e:
            line += f"; PAR / Transformer step time ~{e['step_time_par_over_transformer']:.4f}"
        lines.append(line + ".")
    lines += ["", "Timings depend on the machine and on its load at the time; see training.json.", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in res["config"]["models"]:
        pts = [(r["context"], r["step_seconds"]) for r in res["rows"] if r["model"] == model and "step_seconds" in r]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, "o-", label=model.replace("_", " "))
        ex = [
            (e["context"], e["extrapolated_step_seconds"]) for e in res.get("extrapolated", []) if e["model"] == model
        ]
        if ex:
            x, y = zip(*ex, strict=True)
            label = f"{model.replace('_', ' ')}: over memory budget, extrapolated (not run)"
            ax.plot(x, y, "x", ms=9, color=ax.lines[-1].get_color() if pts else None, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length N")
    ax.set_ylabel("training step time (s)")
    ax.set_title(f"d={res['config']['d_model']}, batch {res['config']['batch']}, {res['device']['platform']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(res: dict[str, Any], outdir: Path) -> dict[str, Path]:
    from repro.runinfo import write_json_atomic

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"json": outdir / "training.json", "md": outdir / "training.md", "png": outdir / "training_step_time.png"}
    write_json_atomic(paths["json"], res)
    paths["md"].write_text(markdown(res))
    plot(res, paths["png"])
    return paths
