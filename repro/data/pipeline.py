"""One data pipeline for every section: documents in, training and evaluation batches out.

A section gives a :class:`~repro.data.source.DocumentSource` (the data contract,
``repro/data/source.py``): splits of documents (``SOS ... EOS`` token arrays, with optional
positions from the data, the evaluated targets, a scored subset and a word count), either a
:class:`~repro.data.source.CorpusSource` (``repro/data/store.py``: prepared on disk, read through
memory maps) or a :class:`~repro.data.source.SyntheticSource` (the copy task). :class:`Pipeline`
owns everything after that:

* training crops: a batch is a pure function of ``(data.train_seed, step)``, so resuming needs no
  iterator state. Crops lie within one document and end uniformly at or after
  ``minimum_crop_length`` (the official ``generate_crops``). Documents are drawn with probability
  proportional to their number of possible crop ends, i.e. every (document, crop end) pair is
  equally likely: a 100k-token book is drawn ~100x as often as a 1k-token article, so long books
  are not under-represented (uniform-over-documents sampling would see each target of a long
  book far less often than one of a short document);
* contiguous per-process row blocks of every global batch (``jax.make_array_from_process_local_data``);
* evaluation batches under every protocol (``repro/eval/protocols.py``), streamed document by
  document (a split is never materialised as windows);
* prefetching: :class:`Prefetcher` prepares the next batches on a background thread while the
  device runs the current step.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from repro.data.source import DocumentSource
from repro.data.windows import cut_windows, random_crop_ends
from repro.eval.protocols import Document, EvalBatches, parse_protocol


class Pipeline:
    """Training and evaluation batches of a :class:`DocumentSource` for a model with context L
    and M latents (see the module docstring)."""

    def __init__(
        self, source: DocumentSource, L: int, M: int, minimum_crop_length: int, train_seed: int,
        share_head: bool = False,
    ):  # fmt: skip
        self.source, self.L, self.M = source, L, M
        self.share_head = share_head  # stride1's exact shared head window (repro/eval/protocols.py)
        self.min_crop = minimum_crop_length or M
        self.train_seed = train_seed
        self._cum: np.ndarray | None = None
        if not source.synthetic:
            lengths = np.asarray(source.train_lengths(), np.int64)
            if not len(lengths):
                raise ValueError("the training split has no documents")
            # Crop ends per document: ends in [min(min_crop, n), n] with n = len - 1 inputs.
            n = lengths - 1
            ends = n - np.minimum(max(self.min_crop, 1), n) + 1
            self._lengths = lengths
            self._cum = np.cumsum(ends)

    def train_batch(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1):
        """Row block ``process_index`` of ``process_count`` equal contiguous blocks of global
        batch ``step`` (every process computes the same global choice, then cuts its rows)."""
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
        rng = np.random.default_rng([self.train_seed, step])
        rows = batch_size // process_count
        lo, hi = process_index * rows, (process_index + 1) * rows
        if self._cum is None:
            seqs, pos = self.source.generate(rng, batch_size)
            ends = random_crop_ends(rng, np.full(batch_size, seqs.shape[1]), self.min_crop)
            pos = None if pos is None else pos[lo:hi]
            return cut_windows(seqs[lo:hi], ends[lo:hi], self.L, self.M, positions_BxTxP=pos)
        # Uniform over (document, crop end) pairs: pick a pair index, then its document and end.
        pair = rng.integers(0, self._cum[-1], size=batch_size)
        docs = np.searchsorted(self._cum, pair, side="right")
        first = pair - np.concatenate([[0], self._cum])[docs]
        n = self._lengths[docs] - 1
        ends = np.minimum(max(self.min_crop, 1), n) + first  # in [min(min_crop, n), n]
        return self._cut(docs[lo:hi], ends[lo:hi], step, lo)

    def _cut(self, docs: np.ndarray, ends: np.ndarray, step: int, row0: int) -> dict[str, np.ndarray]:
        """Windows ending at ``ends`` of training documents ``docs``: only the L + 1 tokens a
        window needs are read from each document. Augmented crops (a music transposition...)
        draw from an rng of (train_seed, step, global row) and are cut to their last L + 1 tokens."""
        B, L = len(docs), self.L
        seqs = np.zeros((B, L + 1), np.int32)
        pos = None
        local_ends = np.zeros(B, np.int64)
        aug = self.source.augments
        for r, (i, e) in enumerate(zip(docs.tolist(), ends.tolist(), strict=True)):
            s0 = max(0, e - L)
            if aug:
                toks, p = self.source.train_slice(
                    i, s0, e + 1, np.random.default_rng([self.train_seed, step, row0 + r])
                )
                toks, e = toks[-(L + 1) :], s0 + min(len(toks), L + 1) - 1
            else:
                toks, p = self.source.train_slice(i, s0, e + 1)
            seqs[r, : len(toks)] = toks
            if p is not None:
                if pos is None:
                    pos = np.zeros((B, L + 1, p.shape[-1]), np.int32)
                pos[r, : len(p)] = p
            local_ends[r] = e - s0
        if pos is None:  # default positions: 1-based offsets in the document, not the slice
            s0 = np.maximum(0, ends - L)
            pos = (s0[:, None] + 1 + np.arange(L + 1)[None, :])[..., None].astype(np.int32)
        return cut_windows(seqs, local_ends, self.L, self.M, positions_BxTxP=pos)

    def eval_batches(
        self, split: str, num: int, batch_size: int, protocol: str, *, max_examples: int | None = None,
        bits_per_dim: bool = False,
    ) -> EvalBatches:  # fmt: skip
        """Windows over the first ``num`` (0 = all) documents of ``split`` under ``protocol``."""
        proto = parse_protocol(protocol, self.M)
        docs = self.source.eval_documents(split, num)
        return EvalBatches(
            docs, proto, self.L, self.M, batch_size, max_examples=max_examples, bits_per_dim=bits_per_dim,
            share_head=self.share_head,
        )  # fmt: skip


class _Ahead:
    """The items of ``items`` produced ``depth`` ahead on a daemon thread, started at once (numpy's
    copies release the GIL, so producing overlaps with the device). Iterating gives the same
    items in the same order; an exception raised while producing is raised at its place in
    that order. ``close()`` stops the thread (it also stops when the items run out)."""

    _DONE = object()

    def __init__(self, items: Iterable[Any], depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._finished = False

        def put(entry) -> bool:  # False once the consumer has gone
            while not self._stop.is_set():
                try:
                    self._q.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for item in items:
                    if not put((item, None)):
                        return
                put((self._DONE, None))
            except BaseException as e:  # handed to the consumer, raised there
                put((self._DONE, e))

        self._thread = threading.Thread(target=work, name="repro-prefetch", daemon=True)
        self._thread.start()

    def __iter__(self) -> _Ahead:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        item, exc = self._q.get()
        if item is self._DONE:
            self._finished = True
            if exc is not None:
                raise exc
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """The items of ``items``, produced ``depth`` ahead on a daemon thread (evaluation windows).
    Same items, same order; an exception raised while producing is raised here, in order; the
    thread stops when the consumer leaves (the generator is closed)."""
    ahead = _Ahead(items, depth)
    try:
        yield from ahead
    finally:
        ahead.close()


class Prefetcher:
    """``make(step)`` for steps ``start, start + 1, ...`` computed ``depth`` steps ahead on a
    daemon thread (numpy releases the GIL for its copies, so this overlaps with the device step).
    Batches are pure functions of the step, so prefetching changes no result."""

    def __init__(self, make: Callable[[int], Any], start: int, stop: int, depth: int = 2):
        self._ahead = _Ahead(((s, make(s)) for s in range(start, stop)), depth)

    def get(self, step: int) -> Any:
        s, batch = next(self._ahead)
        if s != step:
            raise RuntimeError(f"prefetcher out of order: wanted step {step}, got {s}")
        return batch

    def close(self) -> None:
        self._ahead.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def hash_documents(docs: Iterator[Document] | Sequence[Document], extra: str = "") -> str:
    """sha256 (first 16 hex digits) of documents' tokens and positions, for synthetic splits."""
    h = hashlib.sha256(extra.encode())
    for d in docs:
        h.update(np.asarray(d.tokens, np.int32).tobytes())
        if d.positions is not None:
            h.update(np.asarray(d.positions, np.int32).tobytes())
    return h.hexdigest()[:16]
