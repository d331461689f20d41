"""Simple baselines a section reports beside its model, measured on the same split in the same run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from repro.eval.metrics import NLLSums


def unigram(source, split: str, num: int = 0) -> dict[str, Any]:  # source: repro.data.store.Corpus
    """The unigram model of the training split, scored on the same targets as the model.

    P(token) = (count in the training documents' targets + 1) / (N + V): add-one smoothing over the
    data vocabulary (``source.vocab_size`` ids less PAD and SOS, which are never targets). Scored
    over every evaluated target of the first ``num`` (0 = all) documents of ``split``, with the
    metrics of ``repro/eval/metrics.py`` (nats / bits per token, perplexity, word perplexity
    when the split's words are counted)."""
    V = source.vocab_size
    counts = np.zeros(V, np.float64)
    n_train = source.num_documents("train")
    for i in range(n_train):  # a prepared corpus's stored content ids (token = id + 3), then EOS
        counts[3:] += np.bincount(np.asarray(source.content("train", i), np.int64), minlength=V - 3)[: V - 3]
    counts[1] += n_train
    support = V - 2  # every id but PAD and SOS
    logp = np.log(counts + 1.0) - math.log(counts.sum() + support)  # PAD / SOS never occur as targets
    sums, words, known = NLLSums(), 0.0, True
    for d in source.eval_documents(split, num):
        t = d.tokens[1:]
        w = np.ones(len(t)) if d.evaluated is None else d.evaluated.astype(np.float64)
        sums.add(-logp[t], w)
        known &= d.num_words is not None
        words += d.num_words or 0
    return sums.summary(num_words=words if known and words else None)
