"""Named evaluation protocols over whole documents (paper §1.8 in docs/paper_numbers.md).

A *document* is a 1-D token array ``SOS ... EOS`` (``repro/data/windows.py``'s convention:
targets are ``tokens[1:]``, target t is predicted from the inputs ``tokens[:t + 1]``). A protocol
says which windows are run and which of their latents are scored:

``stride1``   the official default: one window per target, ending at that target's input, with
              up to ``max_context`` inputs before it; only its last latent is scored. Every
              target gets the maximum available context (in the cross-attend *and* M - 1
              preceding latents); one forward pass per target.
``blocked:B`` the official ``eval_block_size``: sequential windows, each scoring its last B
              targets (B <= num_latents) with up to ``max_context`` inputs before them. The last
              window ends at the document's last target; the first one scores the remainder.
              ``blocked:1`` is ``stride1``. A target that is k-th from the end of its block sees
              the full input context but only M - k preceding latents, so ``blocked:B`` equals
              ``stride1`` exactly when every document has at most M inputs (all latents of a
              document are then visible to every target in both protocols) and differs, by
              design, otherwise.
``cached:F``  scored through the sampler's KV-cached decoding (``repro/eval/cached.py``), the
              loop ``repro sample`` runs: each document is teacher-forced one token per step,
              prefilled with F latents and reset (a full forward refilling F latents) whenever
              the latent cache holds M, so target s after the prompt sees F + s mod (M - F + 1)
              latents (1 <= F < M; ``cached`` / ``cached:0`` = the sampler's default M // 2).
              The prompt is the document up to its first evaluated target (SOS where all are).
              It equals ``stride1`` on documents of at most M - F + 1 targets and M inputs whose
              prompt has at most F tokens (no reset yet, a latent on every input) and measures
              what the reset fill costs beyond that (issue 23's study).
              No windows: models whose cache is unsupported (implicit absolute positions) are
              refused, since their sampler recomputes every step (= ``stride1``).

``stride1``'s shared head (``share_head``, exact): a document's first targets t < M all see the
whole document before them and every latent from its first one, in their own stride1 windows
*and* in the one window that ends at input M (inputs 0 .. M - 1, latents on all of them): so
that one window scores targets 0 .. min(M, T) - 1, and stride1 runs T - M + 1 windows on a
document of T targets instead of T (one window for documents of at most M targets). It holds for
models whose positions are from the data or relative (rotary, none); implicit absolute positions
count from the window's end and move with it, so the pipeline turns it off for them. Tested equal
to the plain one-window-per-target definition.

Windows are run with the model's full M latents (as the official eval); targets a protocol does
not score are set to PAD in the window, so the one PAD mask of ``token_losses`` removes them
(``repro/eval/metrics.py``: padding is handled exactly once). A document may restrict the targets
that are evaluated at all (``Document.evaluated``: the copy task evaluates its second half and
EOS; images would exclude EOS to report bits per sub-pixel): windows then cover only the span of
evaluated targets. The whole split is evaluated, in order; ``max_examples`` keeps the first N
documents for quick looks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from repro.data.tokens import PAD_ID
from repro.data.windows import cut_windows


@dataclass(frozen=True)
class Protocol:
    name: str  # what goes into every result row, e.g. "stride1", "blocked:128", "cached:64"
    block: int  # targets scored per window (0 for cached:F, which runs no windows)
    fill: int = 0  # cached:F: latents every prefill / reset of the sampler's cache refills (0 = windows)

    @property
    def cached(self) -> bool:
        return self.fill > 0


def parse_protocol(name: str, num_latents: int) -> Protocol:
    """``stride1``, ``blocked:B`` (``blocked:M`` is also accepted and resolved to the number) or
    ``cached:F`` (``cached`` and ``cached:0`` resolve to the sampler's default fill M // 2)."""
    name = name.strip()
    if name == "stride1":
        return Protocol("stride1", 1)
    if name == "cached" or name.startswith("cached:"):
        raw = name.split(":", 1)[1] if ":" in name else "0"
        try:
            F = int(raw)
        except ValueError:
            raise ValueError(f"protocol '{name}': the reset fill F must be an integer") from None
        F = F or num_latents // 2
        if not 1 <= F < num_latents:
            raise ValueError(f"protocol '{name}': the reset fill must be in [1, num_latents={num_latents})")
        return Protocol(f"cached:{F}", 0, fill=F)
    if name.startswith("blocked:"):
        raw = name.split(":", 1)[1]
        if raw == "M":
            raw = str(num_latents)
        try:
            B = int(raw)
        except ValueError:
            raise ValueError(f"protocol '{name}': block size must be an integer") from None
        if not 1 <= B <= num_latents:
            raise ValueError(f"protocol '{name}': block size must be in [1, num_latents={num_latents}]")
        return Protocol(f"blocked:{B}", B)
    raise ValueError(
        f"unknown evaluation protocol '{name}' (stride1, blocked:B with B <= {num_latents}, or cached:F with F < "
        f"{num_latents})"
    )


def describe_split(docs, protocol: str, bits_per_dim: bool, runs_of) -> tuple[dict, int | None, bool]:
    """One pass over ``docs`` (counts only; documents may be built lazily): the split's ``info``
    (protocol, documents, windows = sum of ``runs_of(doc)``, evaluated targets, words, bits/dim),
    the number of position dimensions (None without positions) and whether any has a score mask."""
    runs, targets, words, P, has_score = 0, 0, [], None, False
    for d in docs:
        runs += runs_of(d)
        targets += int(len(d.tokens) - 1 if d.evaluated is None else d.evaluated.sum())
        words.append(d.num_words)
        if d.positions is not None and P is None:
            P = d.positions.shape[-1]
        has_score |= d.score_mask is not None
    info = {
        "protocol": protocol,
        "documents": len(docs),
        "windows": int(runs),
        "targets": targets,
        "num_words": float(sum(words)) if words and all(w is not None for w in words) else None,
        "bits_per_dim": bits_per_dim,
    }
    return info, P, has_score


@dataclass
class Document:
    """One evaluation document.

    tokens:     [T] SOS ... EOS; PAD at either end is stripped (it is padding, not content).
    positions:  [T, P] positions from the data (e.g. (x, y, channel)); None = 1-based offsets.
    evaluated:  [T - 1] bool over targets ``tokens[1:]``: which targets are evaluated (None = all).
    score_mask: [T - 1] bool: a section's subset for accuracy / exact match (copy: mirrored half).
    num_words:  the document's words in the dataset's own word counting (word-level perplexity).
    """

    tokens: np.ndarray
    positions: np.ndarray | None = None
    evaluated: np.ndarray | None = None
    score_mask: np.ndarray | None = None
    num_words: float | None = None

    def __post_init__(self):
        t = np.asarray(self.tokens, np.int32)
        if t.ndim != 1:
            raise ValueError("a document is a 1-D token array")
        nz = np.flatnonzero(t != PAD_ID)
        a, b = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        if b - a < 2:
            raise ValueError("a document needs at least two tokens (SOS and one target)")
        self.tokens = t[a:b]
        if self.positions is not None:
            pos = np.asarray(self.positions, np.int32)
            self.positions = (pos[..., None] if pos.ndim == 1 else pos)[a:b]
        # Target masks are over tokens[1:]: target j of the stripped document is target a + j.
        for name in ("evaluated", "score_mask"):
            m = getattr(self, name)
            if m is not None:
                setattr(self, name, np.asarray(m, bool)[a : b - 1])


def as_documents(seqs, **per_doc) -> list[Document]:
    """Documents from a list of 1-D arrays or a PAD-padded 2-D array; ``per_doc`` values are
    sequences with one entry per document (e.g. ``score_mask=masks``)."""
    return [Document(np.asarray(s), **{k: v[i] for k, v in per_doc.items()}) for i, s in enumerate(seqs)]


def windows(doc: Document, block: int, M: int = 0, share_head: bool = False) -> list[tuple[int, int]]:
    """``(end, scored)`` of every window: the window ending at ``end`` scores its last ``scored``
    targets. ``blocked:block`` windows, or for ``stride1`` with ``share_head`` one head window
    scoring targets 0 .. min(M, last + 1) - 1 and then one window per later target."""
    ends = window_ends(doc, block)
    if block != 1 or not share_head or not len(ends):
        return [(int(e), block) for e in ends.tolist()]
    head = min(M, int(ends[-1]))  # ends[-1] = last evaluated target + 1
    out = [(head, head)] if int(ends[0]) <= head else []
    return out + [(int(e), 1) for e in ends.tolist() if e > head]


def window_ends(doc: Document, block: int) -> np.ndarray:
    """Ends (exclusive, input coordinates) of the windows ``blocked:block`` runs on ``doc``.

    The window ending at e scores targets e - block .. e - 1; the last window ends after the last
    evaluated target and the windows step back by ``block`` while they hold an evaluated target.
    """
    n_targets = len(doc.tokens) - 1
    ev = np.ones(n_targets, bool) if doc.evaluated is None else doc.evaluated
    idx = np.flatnonzero(ev)
    if not len(idx):
        return np.zeros(0, np.int64)
    first, last = int(idx[0]), int(idx[-1])
    ends = np.arange(last + 1, first, -block)[::-1]
    # Drop windows whose block holds no evaluated target (gaps in ``evaluated``).
    keep = [bool(ev[max(e - block, 0) : e].any()) for e in ends]
    return ends[np.asarray(keep, bool)] if len(ends) else ends


class EvalBatches:
    """An iterable of evaluation batches under a protocol (what ``evaluate()`` consumes).

    Batches hold ``inputs``, ``targets`` (PAD where not scored), ``positions``, ``seq_id``
    (document index) and, when documents have one, ``score_mask``. ``protocol`` is the name to
    record; ``info`` describes the split that was evaluated (documents, windows, words, whether
    the metric is bits per dimension).

    ``docs`` may be a lazy sequence (``repro/data/pipeline.py``): documents are built one at a
    time, once to count windows and words, and again while batches are cut, so a split is never
    held in memory, nor all of its windows.
    """

    def __init__(
        self,
        docs: Sequence[Document],
        protocol: Protocol,
        L: int,
        M: int,
        batch_size: int,
        *,
        max_examples: int | None = None,
        bits_per_dim: bool = False,
        share_head: bool = False,
    ):
        if protocol.cached:
            raise ValueError(f"protocol {protocol.name} decodes through the sampler's cache: repro/eval/cached.py")
        if protocol.block > M:
            raise ValueError(f"protocol {protocol.name}: block > num_latents={M}")
        if max_examples is not None and max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {max_examples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(docs) if not max_examples else min(max_examples, len(docs))
        self.docs = docs if n == len(docs) else docs[:n]
        self.protocol, self.L, self.M, self.batch_size = protocol.name, L, M, batch_size
        self.block, self.share_head = protocol.block, share_head
        self.info, self._P, self._has_score = describe_split(
            self.docs, self.protocol, bits_per_dim, lambda d: len(self._windows(d))
        )

    def _windows(self, d: Document) -> list[tuple[int, int]]:
        return windows(d, self.block, self.M, self.share_head)

    def __len__(self) -> int:  # number of batches
        return -(-self.info["windows"] // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        jobs: list[tuple[int, Document, int, int]] = []
        for i, d in enumerate(self.docs):
            for e, scored in self._windows(d):
                jobs.append((i, d, e, scored))
                if len(jobs) == self.batch_size:
                    yield self._batch(jobs)
                    jobs = []
        if jobs:
            yield self._batch(jobs)

    def _batch(self, jobs: list[tuple[int, Document, int, int]]) -> dict[str, np.ndarray]:
        L, M = self.L, self.M
        n = len(jobs)
        # Each window needs inputs [e - L, e) and targets up to e: cut a local slice of at most
        # L + 1 tokens from its document (never the whole document: stride1 on long documents).
        seqs = np.full((n, L + 1), PAD_ID, np.int32)
        pos = np.zeros((n, L + 1, self._P or 1), np.int32)
        evaluated = np.zeros((n, L), bool)
        score = np.zeros((n, L), bool) if self._has_score else None
        ends = np.zeros(n, np.int64)
        for r, (_, d, e, _) in enumerate(jobs):
            s0 = max(0, e - L)
            k = e + 1 - s0
            seqs[r, :k] = d.tokens[s0 : e + 1]
            offsets = (s0 + 1 + np.arange(k))[:, None]  # 1-based offsets by default
            pos[r, :k] = d.positions[s0 : e + 1] if d.positions is not None else offsets
            ev = np.ones(len(d.tokens) - 1, bool) if d.evaluated is None else d.evaluated
            evaluated[r, : k - 1] = ev[s0:e]
            if score is not None and d.score_mask is not None:
                score[r, : k - 1] = d.score_mask[s0:e]
            ends[r] = e - s0
        w = cut_windows(seqs, ends, L, M, score, positions_BxTxP=pos)
        ev_w = cut_windows(seqs, ends, L, M, evaluated)["score_mask"]
        scored_B = np.array([n for *_, n in jobs])
        scored = ev_w & (np.arange(M)[None, :] >= M - scored_B[:, None])
        w["targets"] = np.where(scored, w["targets"], PAD_ID).astype(np.int32)
        if score is not None:
            w["score_mask"] &= scored
        w["seq_id"] = np.array([i for i, *_ in jobs])
        return w
