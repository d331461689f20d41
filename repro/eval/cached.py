"""The ``cached:F`` evaluation protocol: held-out documents scored through the sampler's KV cache.

``repro sample`` decodes with a KV cache (``repro/sample/sampler.py``, ``repro/model/cache.py``):
the prompt's last L = max_context inputs are prefilled with F latents, every step then decodes one
token from the cache, and when the latent cache holds M latents the next step is a reset (a full
forward over the last L inputs, refilling F latents). ``cached:F`` scores a document token by
token through exactly that loop, teacher-forced (``generate(..., forced=, score=True)``: the same
jitted loop, recording the forced token's NLL instead of the logits), so a sweep over F measures
what the reset fill costs (the paper's appendix: quality degrades when the cache is used too long
without a reset).

Per document: the prompt is the document up to the input of its first evaluated target
(``Document.evaluated``; SOS alone when every target is evaluated), prefilled with F latents
(``initial_fill`` = ``reset_fill`` = F); each later target is one step. So target ``first + s``
is predicted with ``n_s = F + s mod (M - F + 1)`` latents in the cache: F at s = 0, one more per
decoded token up to M, then F again at each reset (steps M - F + 1, 2 (M - F + 1), ...). While
the document fits in L inputs that equals a full forward over the target's inputs with ``n_s``
latents, and past L it still does at every reset (tested). Before the first reset, when
``first + 1 <= F`` (e.g. every target evaluated: the prompt is SOS), every input has a latent:
a document of at most M - F + 1 scored targets and at most M inputs is scored exactly as
``stride1`` (tested); later targets see fewer latents than stride1's M, by design.

A long document is scored in spans of at most ``span`` evaluated targets (``SPAN`` = 4,096),
each span one decoding run primed by the whole document before it (its prompt is the document up
to the span's first target, of which the prefill reads the last L inputs, exactly as a run over
the whole document would at a reset), so that the spans of one book decode side by side in a
batch instead of one token at a time in one row. Each span starts at a prefill (a reset), so
target ``first + s`` of a span sees ``n_s`` latents counted from the span's first target; the
spans' starts do not depend on the batch size. Spans are batched ``batch_size`` at a time
(prompts left-padded; a row ends at its last evaluated target, the loop when every row has),
only evaluated targets are scored, and ``max_examples`` keeps the first N documents. Batches
carry the documents (one row per span) in the keys ``evaluate()`` passes to a step
(``inputs``: whole documents [B, T + 1], right-padded with PAD; ``targets``: the span's
evaluated targets, PAD elsewhere; ``positions``: [B, T + 1, P]; ``seq_id``: the document), so
the metrics (nats/token with its standard error, bits, word perplexity, bits/dim, accuracies)
come from ``repro/eval/evaluate.py`` as for every other protocol, with ``protocol:
"cached:F"``. Parameters are cast to ``model.compute_dtype`` as the other protocols' eval step does.

Models whose positions make a cache unsupported (implicit absolute positions,
``cache.supports_cache``) are refused with one line: their sampler recomputes a full forward with
all M latents at every step, which is ``stride1``, not a cached evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from flax import nnx

from repro.data.tokens import PAD_ID, SOS_ID
from repro.eval.protocols import Document, Protocol, describe_split, parse_protocol
from repro.model.cache import supports_cache

SPAN = 4096  # evaluated targets per decoding run (one row of a batch); longer documents are split


def is_cached(name: str | None) -> bool:
    """Does the protocol name ask for ``cached:F`` (parsing, with its errors, is ``parse_protocol``'s)?"""
    return name is not None and name.strip().split(":", 1)[0] == "cached"


def check_model(model_cfg) -> None:
    """One line (ValueError) for a model the sampler cannot decode with a cache."""
    if not supports_cache(model_cfg):
        raise ValueError(
            f"protocol cached:F needs a model the sampler decodes with a KV cache (rotary or no position encoding, "
            f"or positions from the data); this one uses implicit {model_cfg.position_encoding} positions, which the "
            f"sampler recomputes at every step (that is stride1)"
        )


def _evaluated(doc: Document) -> np.ndarray:
    """Indices of ``doc``'s evaluated targets."""
    return np.flatnonzero(np.ones(len(doc.tokens) - 1, bool) if doc.evaluated is None else doc.evaluated)


def _spans(doc: Document, span: int) -> list[np.ndarray]:
    """``doc``'s evaluated target indices in runs of at most ``span`` (none: no run)."""
    idx = _evaluated(doc)
    return [idx[i : i + span] for i in range(0, len(idx), span)]


class CachedBatches:
    """Documents ``batch_size`` at a time, for ``evaluate()`` with :func:`make_step`'s step (see
    the module docstring). ``info`` as :class:`~repro.eval.protocols.EvalBatches`' (``windows``:
    documents with an evaluated target, one decoding run each)."""

    def __init__(
        self,
        docs: Sequence[Document],
        protocol: Protocol,
        batch_size: int,
        *,
        max_examples: int | None = None,
        bits_per_dim: bool = False,
        span: int = SPAN,
    ):
        if not protocol.cached:
            raise ValueError(f"protocol {protocol.name} is not cached:F")
        if max_examples is not None and max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {max_examples}")
        if batch_size < 1 or span < 1:
            raise ValueError(f"batch_size and span must be >= 1, got {batch_size} and {span}")
        n = len(docs) if not max_examples else min(max_examples, len(docs))
        self.docs = docs if n == len(docs) else docs[:n]
        self.protocol, self.fill, self.batch_size, self.span = protocol.name, protocol.fill, batch_size, span
        self.info, self._P, self._has_score = describe_split(
            self.docs, self.protocol, bits_per_dim, lambda d: -(-len(_evaluated(d)) // span)
        )

    def __len__(self) -> int:
        return -(-self.info["windows"] // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        jobs: list[tuple[int, Document]] = []
        for i, d in enumerate(self.docs):
            spans = _spans(d, self.span)
            for idx in spans:
                part = d
                if len(spans) > 1:  # one span of the document: only its targets evaluated
                    ev = np.zeros(len(d.tokens) - 1, bool)
                    ev[idx] = True
                    part = dataclasses.replace(d, evaluated=ev)
                jobs.append((i, part))
                if len(jobs) == self.batch_size:
                    yield self._batch(jobs)
                    jobs = []
        if jobs:
            yield self._batch(jobs)

    def _batch(self, jobs: list[tuple[int, Document]]) -> dict[str, np.ndarray]:
        n, T = len(jobs), max(len(d.tokens) - 1 for _, d in jobs)
        tokens = np.full((n, T + 1), PAD_ID, np.int32)
        targets = np.full((n, T), PAD_ID, np.int32)
        pos = np.zeros((n, T + 1, self._P or 1), np.int32)
        score = np.zeros((n, T), bool) if self._has_score else None
        for r, (_, d) in enumerate(jobs):
            k = len(d.tokens)
            tokens[r, :k] = d.tokens
            ev = np.ones(k - 1, bool) if d.evaluated is None else d.evaluated
            targets[r, : k - 1] = np.where(ev, d.tokens[1:], PAD_ID)
            # Positions from the data, else 1-based offsets (repro/data/windows.py; as EvalBatches).
            pos[r, :k] = d.positions if d.positions is not None else (1 + np.arange(k))[:, None]
            if score is not None and d.score_mask is not None:
                score[r, : k - 1] = d.score_mask & ev
        out = {"inputs": tokens, "targets": targets, "positions": pos, "seq_id": np.array([i for i, _ in jobs])}
        if score is not None:
            out["score_mask"] = score
        return out


def _bucket(n: int) -> int:
    """``n`` rounded up to 2^k or 3 * 2^(k-1) (at least 8): few distinct compiled lengths; rows
    end at their last target, so the rounding costs no decoding steps."""
    b = 8
    while b < n:
        b = b * 3 // 2 if b & (b - 1) == 0 else b * 4 // 3
    return b


def make_step(graphdef, model_cfg, fill: int, *, compiler_options: dict | None = None):
    """``step(params, batch) -> (nll, correct, mask)`` [B, T] over a :class:`CachedBatches` batch:
    each row teacher-forced through ``generate`` with reset fill ``fill``."""
    from repro.sample.sampler import SampleConfig, generate
    from repro.train.step import cast_for_compute

    check_model(model_cfg)
    M, L = model_cfg.num_latents, model_cfg.max_context
    if not 1 <= fill < M:
        raise ValueError(f"cached:{fill}: the reset fill must be in [1, num_latents={M})")
    cfg = SampleConfig(temperature=0.0, reset_fill=fill, initial_fill=fill, stop_at_eos=False)

    def step(params, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
        table = np.asarray(batch["positions"])
        B, T = targets.shape
        scored = targets != PAD_ID
        prompts, spans = [], []
        shift = np.zeros(B, np.int64)  # sequence offset of each prompt's first kept input
        for b in range(B):
            idx = np.flatnonzero(scored[b])
            if not len(idx):  # a padding row (or a document with nothing evaluated): ends at once
                prompts.append(np.array([SOS_ID], np.int32))
                spans.append((0, -1))
                continue
            first, last = int(idx[0]), int(idx[-1])
            # The prefill reads the prompt's last L inputs: only those are passed (the same window,
            # and one compiled loop for every span of a long document whatever its offset).
            shift[b] = max(0, first + 1 - L)
            prompts.append(tokens[b, shift[b] : first + 1])
            spans.append((first, last))
        num_new = _bucket(max(last - first + 1 for first, last in spans))
        forced = np.full((B, num_new), PAD_ID, np.int32)
        for b, (first, last) in enumerate(spans):
            forced[b, : last - first + 1] = tokens[b, first + 1 : last + 2]  # target first + s at step s

        def positions_fn(offsets_BxT):  # prompt offsets -> document offsets (SOS = 0) -> its own positions
            o = np.minimum(offsets_BxT + shift[:, None], table.shape[1] - 1)
            return np.take_along_axis(table, o[..., None], axis=1)

        model = nnx.merge(graphdef, cast_for_compute(params, model_cfg.compute_dtype))
        out = generate(
            model, prompts, num_new, cfg, positions_fn=positions_fn, forced=forced, score=True,
            compiler_options=compiler_options,
        )  # fmt: skip
        nll, correct = np.zeros((B, T), np.float32), np.zeros((B, T), np.float32)
        for b, (first, last) in enumerate(spans):
            nll[b, first : last + 1] = out.target_nll[b, : last - first + 1]
            correct[b, first : last + 1] = out.target_correct[b, : last - first + 1]
        mask = scored.astype(np.float32)
        return nll * mask, correct * mask, mask

    return step


def setup(
    model_cfg, graphdef, docs: Sequence[Document], protocol: str, batch_size: int, *,
    max_examples: int | None = None, bits_per_dim: bool = False, compiler_options: dict | None = None,
    span: int = SPAN,
) -> tuple[CachedBatches, Any]:  # fmt: skip
    """(batches, step) of ``cached:F`` over ``docs``: ``evaluate(step, params, batches, batch_size,
    info=batches.info)`` gives the metrics row. Bad names / models: one-line ValueErrors."""
    proto = parse_protocol(protocol, model_cfg.num_latents)
    if not proto.cached:
        raise ValueError(f"protocol {proto.name} is not cached:F")
    step = make_step(graphdef, model_cfg, proto.fill, compiler_options=compiler_options)
    batches = CachedBatches(docs, proto, batch_size, max_examples=max_examples, bits_per_dim=bits_per_dim, span=span)
    return batches, step
