"""Cutting training / evaluation windows out of token sequences (plain numpy, host side).

A sequence ``s`` (SOS ... EOS, already offset by NUM_RESERVED) gives next-token pairs
``inputs = s[:-1]``, ``targets = s[1:]``. A *crop* ending at ``end`` (1 <= end <= len(s) - 1)
keeps the last L inputs before ``end`` and the targets of its last M positions:

    inputs_BxL   = inputs[end-L : end]     left-padded with PAD when end < L
    targets_BxM  = targets[end-M : end]    left-padded with PAD (masked from the loss)
    positions    = 1-based offsets of the inputs in the sequence (official positions 1..len)

As the official ``generate_crops``, training crops end uniformly at random at or after
``minimum_crop_length`` (>= M, so the first tokens are not oversampled as targets).
"""

from __future__ import annotations

import numpy as np

from repro.data.tokens import PAD_ID


def cut_windows(
    seqs_BxT: np.ndarray,
    ends_B: np.ndarray,
    L: int,
    M: int,
    score_BxT: np.ndarray | None = None,
    positions_BxTxP: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Windows ending at ``ends_B`` (exclusive, in input coordinates) of each padded sequence.

    ``score_BxT`` optionally marks targets (``s[1:]`` coordinates, so length T-1 suffices) that a
    section scores specially, e.g. the mirrored half of the copy task; it is cut like targets.
    ``positions_BxTxP`` optionally gives each token's position from the data (e.g. (x, y,
    channel) for images); the default is the 1-based offset in the sequence. PAD inputs get 0.
    """
    seqs_BxT = np.asarray(seqs_BxT)
    B, T = seqs_BxT.shape
    inputs_BxT1, targets_BxT1 = seqs_BxT[:, :-1], seqs_BxT[:, 1:]
    ends_B = np.asarray(ends_B, dtype=np.int64)
    if np.any(ends_B < 1) or np.any(ends_B > T - 1):
        raise ValueError(f"crop ends must be in [1, {T - 1}]")
    rows = np.arange(B)[:, None]

    in_idx_BxL = ends_B[:, None] - L + np.arange(L)[None, :]
    in_ok = in_idx_BxL >= 0
    inputs = np.where(in_ok, inputs_BxT1[rows, np.clip(in_idx_BxL, 0, None)], PAD_ID)
    if positions_BxTxP is None:
        positions = np.where(in_ok & (inputs != PAD_ID), in_idx_BxL + 1, 0)[..., None]
    else:
        pos = np.asarray(positions_BxTxP)[rows, np.clip(in_idx_BxL, 0, None)]  # B x L x P
        positions = np.where((in_ok & (inputs != PAD_ID))[..., None], pos, 0)

    tg_idx_BxM = ends_B[:, None] - M + np.arange(M)[None, :]
    tg_ok = tg_idx_BxM >= 0
    targets = np.where(tg_ok, targets_BxT1[rows, np.clip(tg_idx_BxM, 0, None)], PAD_ID)
    out = {
        "inputs": inputs.astype(np.int32),
        "targets": targets.astype(np.int32),
        "positions": positions.astype(np.int32),
    }
    if score_BxT is not None:
        score = np.asarray(score_BxT, bool)[:, : T - 1]
        out["score_mask"] = np.where(tg_ok, score[rows, np.clip(tg_idx_BxM, 0, None)], False)
    return out


def random_crop_ends(rng: np.random.Generator, lengths_B: np.ndarray, minimum_crop_length: int) -> np.ndarray:
    """Uniform crop ends in [min(minimum_crop_length, n), n] where n = len(s) - 1 inputs."""
    n_B = np.asarray(lengths_B) - 1
    lo_B = np.minimum(max(minimum_crop_length, 1), n_B)
    return rng.integers(lo_B, n_B + 1)
