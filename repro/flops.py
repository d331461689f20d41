"""Analytic parameter and FLOP counts of a Perceiver AR (``ModelConfig``), without building it.

Parameters: every Linear has a bias, every LayerNorm a scale and an offset (the official
architecture); sinusoidal and rotary encodings have no parameters (the official code stores its
frozen sinusoidal table as a stop-gradient parameter, which we neither have nor count).

FLOPs: 2 per multiply-add of every matrix product (weights and attention), for the computation
as the code runs it. Attention is counted over all M x L' query-key pairs, masked or not (neither
the dense nor the chunked kernel skips masked blocks). Elementwise work (LayerNorm, softmax,
activations) is left out, so XLA's own count (``compiled.cost_analysis()``) is a little higher.
A training step is forward + backward (2 x forward) + recomputation: the whole blocks again with
``remat``, and the attention products again for the chunked kernel (it checkpoints each chunk).
"""

from __future__ import annotations

from typing import Any

from repro.config import Experiment, ModelConfig


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Trainable parameters by part; ``total`` is their sum."""
    D, Di, V = cfg.d_model, cfg.input_width, cfg.vocab_size
    wc, ws = cfg.cross_widening, cfg.self_widening
    lin = lambda i, o: i * o + o  # kernel + bias
    ln = lambda d: 2 * d
    pos = 0
    if cfg.position_encoding == "learned":
        pos = sum(cfg.position_table_sizes or (cfg.max_context + 1,)) * Di
    cross = (
        ln(D) + ln(Di)  # LayerNorms on the latent queries and on the inputs
        + lin(D, Di) + 2 * lin(Di, Di) + lin(Di, D)  # q (D -> Di), k, v (Di -> Di), o (Di -> D)
        + ln(D) + lin(D, wc * D) + lin(wc * D, D)  # MLP
    )  # fmt: skip
    self_layer = ln(D) + 4 * lin(D, D) + ln(D) + lin(D, ws * D) + lin(ws * D, D)
    out = {
        "token_embedding": V * Di,
        "position_embedding": pos,
        "z_linear": lin(Di, D),
        "cross_attend": cross,
        "self_attend": cfg.num_layers * self_layer,
        "final": ln(D) + lin(D, V),
    }
    out["total"] = sum(out.values())
    return out


def param_count(cfg: ModelConfig) -> int:
    return param_counts(cfg)["total"]


def cross_keys(cfg: ModelConfig, context: int | None = None, train: bool = True) -> int:
    """Keys the cross-attend runs on: the context, or ``train_input_positions`` at train time."""
    L = context or cfg.max_context
    K = cfg.train_input_positions
    return K if (train and 0 < K < L) else L


def forward_flops(
    cfg: ModelConfig, *, context: int | None = None, latents: int | None = None, train=True, batch: int | None = None
):
    """Matmul FLOPs of one forward pass of ONE example, by part (``total`` is their sum).

    With ``batch`` given and the cross-attend's keys / values computed per vocabulary entry
    (``ModelConfig.kv_per_vocab``), their projections cost V rows per batch instead of L' rows
    per example: counted as that batch's share per example. Without ``batch``: per input.
    """
    D, Di, V = cfg.d_model, cfg.input_width, cfg.vocab_size
    M = min(latents or cfg.num_latents, context or cfg.max_context)
    Lk = cross_keys(cfg, context, train)
    wc, ws = cfg.cross_widening, cfg.self_widening
    kv_rows = V / batch if batch and cfg.kv_per_vocab(batch * Lk) else Lk
    out = {
        "z_linear": 2 * M * Di * D,
        "cross_projections": 2 * (M * D * Di + 2 * kv_rows * Di * Di + M * Di * D),
        "cross_attention": 2 * 2 * M * Lk * Di,  # q.k and p.v
        "cross_mlp": 2 * 2 * M * D * wc * D,
        "self_projections": cfg.num_layers * 2 * 4 * M * D * D,
        "self_attention": cfg.num_layers * 2 * 2 * M * M * D,
        "self_mlp": cfg.num_layers * 2 * 2 * M * D * ws * D,
        "logits": 2 * M * D * V,
    }
    out["total"] = sum(out.values())
    return out


def train_step_flops(exp: Experiment) -> dict[str, Any]:
    """FLOPs of one training step (the global batch), per example and per target token."""
    cfg, B = exp.model, exp.train.batch_size
    fwd = forward_flops(cfg, batch=B // max(exp.train.grad_accum, 1))  # the batch one forward sees
    per_example = 3 * fwd["total"]  # forward + backward (twice the forward)
    if cfg.remat:  # the blocks' forward runs again in the backward pass
        per_example += fwd["total"] - fwd["logits"] - fwd["z_linear"]
    if cfg.resolved_attention() == "chunked":  # the chunked kernel checkpoints each key chunk
        per_example += fwd["cross_attention"] + fwd["self_attention"]
    M = min(cfg.num_latents, cfg.max_context)
    return {
        "forward_per_example": fwd["total"],
        "forward_breakdown": fwd,
        "step": per_example * B,
        "per_example": per_example,
        "per_target_token": per_example / M,
        "target_tokens_per_step": B * M,
    }


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"
