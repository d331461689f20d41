"""The synthetic mirrored-copy task (paper Section 5.1; official ``RandomMirroredDataset``).

Every sequence is ``[SOS] + x + reverse(x) + [EOS]`` with ``x`` n = (seq_len - 2) / 2 uniform
random bytes offset by NUM_RESERVED (ids 3..258), so the vocabulary is 259 and the total
length is ``seq_len`` (random_mirrored_131072: n = 65,535). The second half is fully determined
by the first; the *mirrored half* = the n reversed tokens, the targets we score for accuracy.

Training data are a pure function of (seed, step) (``repro/data/pipeline.py``): batch ``step``
of the training stream is the same in every process and after every restart, so resuming needs
only the step number.
"""

from __future__ import annotations

import hashlib

import numpy as np

from repro.data.source import DatasetInfo, SyntheticSource
from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.eval.protocols import Document

VOCAB_SIZE = 256 + NUM_RESERVED


def mirrored_sequences(rng: np.random.Generator, batch: int, seq_len: int) -> np.ndarray:
    """[batch, seq_len] int32 sequences SOS, x, reverse(x), EOS."""
    if seq_len < 4 or seq_len % 2:
        raise ValueError(f"copy-task seq_len must be even and >= 4, got {seq_len}")
    n = (seq_len - 2) // 2
    x = rng.integers(0, 256, size=(batch, n)) + NUM_RESERVED
    sos = np.full((batch, 1), SOS_ID)
    eos = np.full((batch, 1), EOS_ID)
    return np.concatenate([sos, x, x[:, ::-1], eos], axis=1).astype(np.int32)


def mirrored_half_mask(seq_len: int) -> np.ndarray:
    """Bool [seq_len - 1] over targets s[1:]: True on the n reversed tokens (not EOS)."""
    n = (seq_len - 2) // 2
    m = np.zeros(seq_len - 1, bool)
    m[n : 2 * n] = True  # targets s[1:]: indices 0..n-1 are x, n..2n-1 reverse(x), 2n is EOS
    return m


class CopySource(SyntheticSource):
    """The copy task as a :class:`SyntheticSource`: training documents are fresh random
    sequences drawn from the batch's rng (so a batch is a pure function of (seed, step)); the
    evaluation splits are fixed sequences from ``eval_seed`` (validation and test differ)."""

    vocab_size = VOCAB_SIZE

    def __init__(self, seq_len: int, L: int, eval_seed: int, train_seed: int):
        if seq_len < 4 or seq_len % 2:
            raise ValueError(f"copy-task seq_len must be even and >= 4, got {seq_len}")
        if L < seq_len - 1:
            raise ValueError(f"max_context={L} is shorter than the {seq_len - 1} inputs of a copy sequence")
        self.seq_len, self.eval_seed, self.train_seed = seq_len, eval_seed, train_seed
        self.info = DatasetInfo(
            name="copy (synthetic mirrored sequences)", variant=f"random_mirrored_{seq_len}", is_paper_data=True
        )

    def generate(self, rng: np.random.Generator, n: int):
        return mirrored_sequences(rng, n, self.seq_len), None

    def eval_sequences(self, num: int, split: str = "validation") -> np.ndarray:
        stream = {"validation": 1 << 20, "test": 1 << 21, "train": 1 << 22}[split]
        return mirrored_sequences(np.random.default_rng([self.eval_seed, stream]), num, self.seq_len)

    def evaluated_mask(self) -> np.ndarray:
        """Bool [seq_len - 1] over targets s[1:]: the evaluated targets, the mirrored half + EOS.

        The first half is uniform noise (ln 256 nats per token for any model) and is not
        evaluated; nats/token are over the mirrored half and EOS.
        """
        m = mirrored_half_mask(self.seq_len)
        m[-1] = True  # EOS
        return m

    def eval_documents(self, split: str, num: int = 0) -> list[Document]:
        if num < 1:
            raise ValueError("the copy task's evaluation split is synthetic: data.eval_examples must be >= 1")
        seqs = self.eval_sequences(num, split)
        ev, score = self.evaluated_mask(), mirrored_half_mask(self.seq_len)
        return [Document(s, evaluated=ev, score_mask=score) for s in seqs]

    def data_hash(self, split: str, num: int = 0) -> str:
        """sha256 of the evaluation set (the training stream is determined by the seed)."""
        h = hashlib.sha256(self.eval_sequences(num, split).tobytes())
        h.update(f"copy:{self.seq_len}:train_seed={self.train_seed}".encode())
        return h.hexdigest()[:16]
