"""Teacher-forced evaluation over a dataset's evaluation windows.

Reports, over every scored (non-PAD) target: nats/token, bits/token and perplexity, each with a
standard error (``repro/eval/metrics.py``), word-level perplexity when the split's word count is
known, bits/dim for image sections, token accuracy; and over the targets a section marks in
``score_mask`` (the copy task's mirrored half): token accuracy and per-sequence exact match (all
marked targets right). When the batches come from a named protocol
(``repro/eval/protocols.py``), its name is recorded as ``protocol``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from repro.data.pipeline import prefetch
from repro.eval.metrics import NLLSums
from repro.eval.protocols import EvalBatches

if TYPE_CHECKING:
    from repro.config import Experiment
    from repro.data.source import DocumentSource

MODEL_KEYS = ("inputs", "targets", "positions")


def eval_document_count(exp: Experiment, source: DocumentSource, max_examples: int | None = None) -> int:
    """How many documents of the evaluation split an evaluation of ``exp`` on ``source`` reads
    (``source.eval_documents(split, num)``: its first ``num``, 0 = all): the one rule of ``repro
    run``'s evaluations and ``repro eval``'s. By default training's ``data.eval_examples`` (0 =
    the whole split). An explicit ``max_examples`` (``repro eval --max-examples N``) wins: the
    whole split is read and the protocol keeps its first N documents; a synthetic split (``data.
    eval_examples`` generated documents, its data hash computed over them) stays those documents."""
    if max_examples is not None and not source.synthetic:
        return 0
    return exp.data.eval_examples


def _pad_batch(batch: dict[str, np.ndarray], size: int) -> tuple[dict[str, np.ndarray], int]:
    """The model's arrays, padded with all-PAD rows to the (compiled) batch size."""
    n = len(batch["inputs"])
    batch = {k: batch[k] for k in MODEL_KEYS if k in batch}
    if n == size:
        return batch, n
    # Rows of PAD: every target masked, so they add nothing to any sum.
    return {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}, n


def evaluate(
    eval_step,
    params,
    batches: Iterable[dict[str, np.ndarray]],
    batch_size: int,
    *,
    info: dict[str, Any] | None = None,
    on_batch: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> dict[str, Any]:
    """Metrics of ``params`` over ``batches``. The split's description (protocol, documents,
    word count, bits/dim) comes from ``batches.info`` for :class:`EvalBatches`, or from ``info``
    for any other iterable of batches (given explicitly: never silently dropped).
    ``on_batch(batch)`` is called after each batch (progress bars)."""
    if info is None:
        if not isinstance(batches, EvalBatches):
            raise TypeError("evaluate(): plain batches need info={...} (protocol, num_words, bits_per_dim)")
        info = batches.info
    sums = NLLSums()
    correct = 0.0
    s_correct = s_tokens = 0.0
    seq_wrong: dict[int, float] = {}  # sequence id -> number of wrong scored targets

    def consume(raw, n, outputs):
        nonlocal correct, s_correct, s_tokens
        nll, corr, mask = (np.asarray(a, np.float64)[:n] for a in outputs)
        sums.add(nll, mask)
        correct += corr.sum()
        if "score_mask" in raw:
            sm = raw["score_mask"].astype(np.float64)
            s_correct += (corr * sm).sum()
            s_tokens += sm.sum()
            wrong_B = ((1.0 - corr) * sm).sum(1)
            ids = raw.get("seq_id", np.arange(len(wrong_B)) + len(seq_wrong))
            for sid, w, has in zip(ids.tolist(), wrong_B.tolist(), (sm.sum(1) > 0).tolist(), strict=True):
                if has:
                    seq_wrong[sid] = seq_wrong.get(sid, 0.0) + w
        if on_batch:
            on_batch(raw)

    # The hot path: batches are cut on a background thread (``prefetch``), and the step for batch
    # i + 1 is dispatched (asynchronously) before batch i's results are read back, so the device
    # never waits for the host's window cutting or its reading of the last results.
    pending = None
    for raw in prefetch(batches, depth=2):
        batch, n = _pad_batch(raw, batch_size)
        outputs = eval_step(params, batch)
        if pending is not None:
            consume(*pending)
        pending = (raw, n, outputs)
    if pending is not None:
        consume(*pending)
    out: dict[str, Any] = {}
    if info.get("protocol"):
        out["protocol"] = info["protocol"]
    out.update(sums.summary(num_words=info.get("num_words"), bits_per_dim=bool(info.get("bits_per_dim"))))
    out["token_accuracy"] = correct / max(sums.n, 1.0)
    if "documents" in info:
        out["eval_documents"] = info["documents"]
    if s_tokens:
        # Standard error of an accuracy: binomial, with the Laplace estimate (k + 1) / (n + 2) so
        # that a perfect score still has an uncertainty (a claims study compares it with 99.9 %).
        p_tilde = (s_correct + 1) / (s_tokens + 2)
        out.update(
            scored_token_accuracy=s_correct / s_tokens,
            scored_token_accuracy_stderr=float(np.sqrt(p_tilde * (1 - p_tilde) / s_tokens)),
            sequence_accuracy=sum(w == 0 for w in seq_wrong.values()) / max(len(seq_wrong), 1),
            scored_tokens=s_tokens,
            eval_sequences=len(seq_wrong),
        )
    return out
