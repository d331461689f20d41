"""The decoder-only Transformer baseline: Perceiver AR with M = N, on the same code path.

With ``num_latents == max_context`` every input position is a latent, so the model is a plain
decoder-only (pre-LayerNorm, causal) Transformer over all N positions, trained on all N targets:

* block 1 is the cross-attend: queries ``z_linear(x)``, keys / values ``x``, causal over all N
  positions (its query and key streams differ only by the linear map ``z_linear``, which is
  how the official code builds its queries; with d_input = d_model that is a learned linear
  re-parameterisation of the residual stream, not a change of function class);
* blocks 2 .. L+1 are the L latent self-attention blocks, now over all N positions.

So ``as_transformer(exp)`` is a Transformer of **L + 1** layers at the same width, heads,
positions, optimiser, data and training loop as ``exp``: every comparison is like for like.
It costs O(N^2 (L + 1)) attention and O(N (L + 1) d^2) projections per sequence, where
Perceiver AR costs O(N M) + O(M^2 L) and O(N d^2 + M L d^2) (``repro/flops.py`` counts both).
``tests/test_baseline.py`` checks it against an independent textbook Transformer forward.
"""

from __future__ import annotations

import dataclasses

from repro.config import Experiment


def is_transformer(exp: Experiment) -> bool:
    return exp.model.num_latents >= exp.model.max_context


def as_transformer(exp: Experiment, preset: str | None = None) -> Experiment:
    """``exp`` with num_latents = max_context: the (L + 1)-layer decoder-only Transformer."""
    m = exp.model
    return dataclasses.replace(
        exp,
        preset=preset or f"{exp.preset}_transformer",
        model=dataclasses.replace(m, num_latents=m.max_context),
        description=f"Transformer baseline of '{exp.preset}': {m.num_layers + 1} causal layers over all "
        f"{m.max_context} positions (Perceiver AR with M = N; repro/baseline.py)",
    ).validate()
