"""The synthetic mirrored-copy task (paper Section 5.1; official ``RandomMirroredDataset``).

Every sequence is ``[SOS] + x + reverse(x) + [EOS]`` with ``x`` n = (seq_len - 2) / 2 uniform
random bytes offset by NUM_RESERVED (ids 3..258), so the vocabulary is 259 and the total
length is ``seq_len`` (random_mirrored_131072: n = 65,535). The second half is fully determined
by the first; the *mirrored half* = the n reversed tokens, the targets we score for accuracy.

Data are a pure function of (seed, step): batch ``step`` of the training stream is the same in
every process and after every restart, so resuming needs only the step number.
"""

from __future__ import annotations

import hashlib

import numpy as np

from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.data.windows import cut_windows, random_crop_ends
from repro.eval.protocols import Document, EvalBatches, parse_protocol

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


class CopyTask:
    """Batches of windows for a Perceiver AR with context L and M latents."""

    vocab_size = VOCAB_SIZE

    def __init__(self, seq_len: int, L: int, M: int, minimum_crop_length: int, train_seed: int, eval_seed: int):
        self.seq_len, self.L, self.M = seq_len, L, M
        self.min_crop = minimum_crop_length or M
        self.train_seed, self.eval_seed = train_seed, eval_seed
        if L < seq_len - 1:
            raise ValueError(f"max_context={L} is shorter than the {seq_len - 1} inputs of a copy sequence")

    def train_batch(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1):
        """This process's share of global batch ``step``: contiguous row block ``process_index``
        of ``process_count`` (the layout ``jax.make_array_from_process_local_data`` expects)."""
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
        rng = np.random.default_rng([self.train_seed, step])
        seqs = mirrored_sequences(rng, batch_size, self.seq_len)
        ends = random_crop_ends(rng, np.full(batch_size, self.seq_len), self.min_crop)
        w = cut_windows(seqs, ends, self.L, self.M)
        n = batch_size // process_count
        return {k: v[process_index * n : (process_index + 1) * n] for k, v in w.items()}

    def eval_sequences(self, num: int) -> np.ndarray:
        return mirrored_sequences(np.random.default_rng([self.eval_seed, 1 << 20]), num, self.seq_len)

    def evaluated_mask(self) -> np.ndarray:
        """Bool [seq_len - 1] over targets s[1:]: the evaluated targets, the mirrored half + EOS.

        The first half is uniform noise (ln 256 nats per token for any model) and is not
        evaluated; nats/token are over the mirrored half and EOS.
        """
        m = mirrored_half_mask(self.seq_len)
        m[-1] = True  # EOS
        return m

    def eval_documents(self, num: int) -> list[Document]:
        seqs = self.eval_sequences(num)
        ev, score = self.evaluated_mask(), mirrored_half_mask(self.seq_len)
        return [Document(s, evaluated=ev, score_mask=score) for s in seqs]

    @property
    def default_protocol(self) -> str:
        """``blocked:M``: with M >= n + 1 one window (ending at EOS) scores the whole mirrored
        half; with fewer latents (e.g. 1024 latents for 131,072 tokens) consecutive blocks of M
        targets are scored, each with all of the sequence before it as context."""
        return f"blocked:{self.M}"

    def eval_batches(
        self, num: int, batch_size: int, protocol: str | None = None, max_examples: int | None = None
    ) -> EvalBatches:
        """Windows over whole eval sequences under ``protocol`` (default ``blocked:M``), with the
        mirrored half marked in ``score_mask`` and a sequence id per row."""
        proto = parse_protocol(protocol or self.default_protocol, self.M)
        docs = self.eval_documents(num)
        return EvalBatches(docs, proto, self.L, self.M, batch_size, max_examples=max_examples)

    def data_hash(self, num_eval: int) -> str:
        """sha256 of the evaluation set (the training stream is determined by the seed)."""
        h = hashlib.sha256(self.eval_sequences(num_eval).tobytes())
        h.update(f"copy:{self.seq_len}:train_seed={self.train_seed}".encode())
        return h.hexdigest()[:16]
