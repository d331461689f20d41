"""Peer timing: lucidrains' ``perceiver-ar-pytorch`` training step on this CPU (not a test).

Run with a scratch venv that has the CPU torch wheel and ``perceiver-ar-pytorch==0.0.10`` (the
project's venv has no torch):

    python3 -m venv /tmp/torchpeer && /tmp/torchpeer/bin/pip install torch perceiver-ar-pytorch==0.0.10
    /tmp/torchpeer/bin/python benchmarks/peer_pytorch.py --out /tmp/peer.json

Config (matching ``repro bench --lengths 1024 --num-latents 128 --batch 8 --models perceiver_ar``):
N=1024, M=128 (cross_attn_seq_len = N - M), d=256, 4 heads of 64, 1 cross-attend + 4 latent
layers, MLP x4, vocab 259, batch 8, f32, Adam (lr 3e-4), no dropout. Median of the timed steps
after 2 warm-up steps. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from perceiver_ar_pytorch import PerceiverAR

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=5)
p.add_argument("--n", type=int, default=1024, help="context length N")
p.add_argument("--latents", type=int, default=128, help="latents M")
p.add_argument("--out", default=None)
a = p.parse_args()

N, M, D, HEADS, LAYERS, B, V = a.n, a.latents, 256, 4, 4, 8, 259
torch.manual_seed(0)
torch.set_num_threads(os.cpu_count() or 1)
model = PerceiverAR(
    num_tokens=V, dim=D, depth=LAYERS, max_seq_len=N, cross_attn_seq_len=N - M, dim_head=64, heads=HEADS
)
opt = torch.optim.Adam(model.parameters(), lr=3e-4)
x = torch.randint(3, V, (B, N + 1))


def step() -> float:
    t = time.perf_counter()
    loss = model(x[:, :N], labels=x[:, 1:])  # loss on the last M positions, as Perceiver AR trains
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t


load_before = os.getloadavg()
for _ in range(2):
    step()
times = [step() for _ in range(a.steps)]
med = statistics.median(times)
res = {
    "peer": "lucidrains perceiver-ar-pytorch 0.0.10",
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "config": {"N": N, "M": M, "d": D, "heads": HEADS, "latent_layers": LAYERS, "batch": B, "vocab": V},
    "params": sum(q.numel() for q in model.parameters()),
    "step_seconds": med,
    "step_seconds_all": times,
    "target_tokens_per_second": B * M / med,
    "load_average_before": load_before,
    "load_average_after": os.getloadavg(),
    "host": platform.processor() or platform.machine(),
}
print(json.dumps(res, indent=1))
if a.out:
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
