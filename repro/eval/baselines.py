"""Simple baselines a section reports beside its model, measured on the same split in the same run.

* :func:`unigram`: the training split's token histogram, scored on the model's targets (any corpus);
* :func:`unigram_bits_per_dim`, :func:`previous_pixel_bits_per_dim`: ImageNet 64x64's sub-pixel
  value histogram and same-channel previous-pixel model, in bits per sub-pixel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from repro.data.imagenet64 import CHANNELS, VALUE_RANGE, content_image, downsample, resolution_of
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


# ------------------------------------------------------------------------------------------------
# ImageNet 64x64: bits per sub-pixel


class _Counts:
    """Sub-pixel value counts (unigram) and same-channel previous-pixel pair counts (bigram)."""

    def __init__(self) -> None:
        self.unigram = np.zeros(VALUE_RANGE, np.int64)
        self.bigram = np.zeros(VALUE_RANGE * VALUE_RANGE, np.int64)

    def add(self, images: Iterable[np.ndarray], pairs: bool) -> None:
        for img in images:
            v = img.reshape(-1, CHANNELS).astype(np.int64)  # [pixels, 3], raster order
            self.unigram += np.bincount(v.reshape(-1), minlength=VALUE_RANGE)
            if pairs:
                self.bigram += np.bincount((v[:-1] * VALUE_RANGE + v[1:]).reshape(-1), minlength=VALUE_RANGE**2)

    def log2_unigram(self) -> np.ndarray:
        return np.log2((self.unigram + 1) / (self.unigram.sum() + VALUE_RANGE))

    def log2_bigram(self) -> np.ndarray:
        b = self.bigram.reshape(VALUE_RANGE, VALUE_RANGE)
        return np.log2((b + 1) / (b.sum(axis=1, keepdims=True) + VALUE_RANGE))


def _images(contents: Iterable[np.ndarray], data_cfg: Any) -> Iterator[np.ndarray]:
    r = resolution_of(data_cfg)
    for c in contents:
        yield downsample(content_image(c), r)


def unigram_bits_per_dim(train: Iterable[np.ndarray], val: Iterable[np.ndarray], data_cfg: Any = None) -> float:
    """Bits per sub-pixel of ``val`` under the training set's sub-pixel value histogram (add-one
    smoothing, shared by the three channels). Inputs: stored contents (12,288 HWC values),
    streamed; ``data_cfg.resolution`` applies the same downsampling as the model's data."""
    counts = _Counts()
    counts.add(_images(train, data_cfg), pairs=False)
    lp = counts.log2_unigram()
    total, n = 0.0, 0
    for img in _images(val, data_cfg):
        v = img.reshape(-1)
        total -= float(lp[v].sum())
        n += v.size
    if n == 0:
        raise ValueError("unigram_bits_per_dim: no validation images")
    return total / n


def previous_pixel_bits_per_dim(train: Iterable[np.ndarray], val: Iterable[np.ndarray], data_cfg: Any = None) -> float:
    """Bits per sub-pixel of ``val`` under P(v | the same channel's value at the previous pixel in
    raster order), one 256x256 table shared by the channels, counted on ``train`` with add-one
    smoothing; the first pixel of each image uses the unigram model. Streamed (counts only)."""
    counts = _Counts()
    counts.add(_images(train, data_cfg), pairs=True)
    lu, lb = counts.log2_unigram(), counts.log2_bigram()
    total, n = 0.0, 0
    for img in _images(val, data_cfg):
        v = img.reshape(-1, CHANNELS).astype(np.int64)
        total -= float(lu[v[0]].sum() + lb[v[:-1], v[1:]].sum())
        n += v.size
    if n == 0:
        raise ValueError("previous_pixel_bits_per_dim: no validation images")
    return total / n
