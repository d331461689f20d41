"""repro vs lucidrains' ``perceiver-ar-pytorch``: one training step, interleaved processes (not a test).

For each N the two implementations run as separate processes, alternating peer, repro, peer, repro,
... (``--rounds`` each), back to back, so the ratio comes from one stretch of machine load; each process
reports the median of its timed steps. Config (issue #5): M=128, d=256, 4 heads, 1 cross-attend + 4
latent layers, batch 8, f32, Adam, no dropout, vocabulary 259. repro side: ``repro bench --models
perceiver_ar`` (its default rotary positions, dense attention); peer side: ``peer_pytorch.py``.

    python3 -m venv /tmp/torchpeer && /tmp/torchpeer/bin/pip install torch==2.13.0 perceiver-ar-pytorch==0.0.10
    .venv/bin/python benchmarks/peer_compare.py --peer-python /tmp/torchpeer/bin/python --out results/bench

Writes ``peer_pytorch.json`` and ``peer_pytorch.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from repro.runinfo import provenance, write_json_atomic  # noqa: E402


def run_peer(python: str, n: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "peer.json"
        cmd = [python, str(HERE / "peer_pytorch.py"), "--n", str(n), "--steps", str(steps), "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(out.read_text())


def run_repro(n: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, str(ROOT / "cli.py"), "bench", "--lengths", str(n), "--num-latents", "128",
               "--batch", "8", "--models", "perceiver_ar", "--repeats", str(steps), "--out", d]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        res = json.loads((Path(d) / "training.json").read_text())
    row = res["rows"][0]
    return {
        "step_seconds": row["step_seconds"], "step_seconds_all": row["step_seconds_all"],
        "params": row["params"], "load_average_before": res["load_average_before"],
        "matmul_peak_flops_per_second": res["matmul_peak"]["flops_per_second"],
        "flops_per_step": row["analytic_flops_per_step"],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="python of a venv with torch and perceiver-ar-pytorch")
    p.add_argument("--lengths", default="1024,8192")
    p.add_argument("--rounds", type=int, default=2, help="peer/repro pairs per N")
    p.add_argument("--steps", type=int, default=8, help="timed steps per process")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    a = p.parse_args()
    results = {}
    for n in [int(x) for x in a.lengths.split(",")]:
        peer, ours = [], []
        for r in range(a.rounds):
            peer.append(run_peer(a.peer_python, n, a.steps))
            ours.append(run_repro(n, a.steps))
            print(f"N={n} round {r + 1}: peer {peer[-1]['step_seconds']:.3f} s, repro {ours[-1]['step_seconds']:.3f} s")
        ratios = [o["step_seconds"] / q["step_seconds"] for o, q in zip(ours, peer, strict=True)]
        results[str(n)] = {"peer": peer, "repro": ours, "repro_over_peer_per_round": ratios,
                           "repro_over_peer_median": statistics.median(ratios)}  # fmt: skip
    res = {
        "benchmark": "one training step, repro vs lucidrains perceiver-ar-pytorch 0.0.10, interleaved processes",
        "order": f"per N: (peer, repro) x {a.rounds}, back to back; each process: median of {a.steps} steps",
        "config": {
            "M": 128,
            "d": 256,
            "heads": 4,
            "latent_layers": 4,
            "batch": 8,
            "vocab": 259,
            "dtype": "float32",
            "optimizer": "Adam",
        },  # fmt: skip
        "results": results,
        "load_average_after": os.getloadavg(),
        "peer_torch": results[next(iter(results))]["peer"][0]["torch"],
        **provenance("benchmarks/peer_compare.py " + " ".join(sys.argv[1:]).replace(a.peer_python, "<peer venv>")),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.out / "peer_pytorch.json", res)
    lines = [
        "# Peer: repro vs lucidrains perceiver-ar-pytorch (one training step)",
        "",
        "M=128, d=256, 4 heads, 1 cross-attend + 4 latent layers, batch 8, f32, Adam; vocabulary 259. "
        f"Separate processes, interleaved per N: (peer, repro) x {a.rounds}, each the median of {a.steps} "
        f"steps. torch {res['peer_torch']} (CPU wheel); git {res['git_sha']}, {res['date']}.",
        "",
        "| N | round | peer step (s) | repro step (s) | repro / peer | load avg (1 min) before repro |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in results.items():
        for i, (q, o) in enumerate(zip(r["peer"], r["repro"], strict=True)):
            lines.append(
                f"| {int(n):,} | {i + 1} | {q['step_seconds']:.3f} | {o['step_seconds']:.3f} "
                f"| {o['step_seconds'] / q['step_seconds']:.2f} | {o['load_average_before'][0]:.2f} |"
            )
    lines += ["", "| N | repro / peer (median over rounds) |", "|---:|---:|"]
    lines += [f"| {int(n):,} | **{r['repro_over_peer_median']:.2f}** |" for n, r in results.items()]
    lines += ["", "Not like-for-like kernels: PyTorch runs oneDNN/MKL-style kernels, repro runs XLA:CPU.", ""]
    (a.out / "peer_pytorch.md").write_text("\n".join(lines))
    print((a.out / "peer_pytorch.md").read_text())


if __name__ == "__main__":
    main()
