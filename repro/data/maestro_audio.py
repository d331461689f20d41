"""MAESTRO audio (paper Section 5.6) as residual-VQ codes: ``section="maestro_audio"``, :data:`FORMAT`.

SoundStream is not available, so the audio models read pre-computed residual-VQ codes (see
:class:`AudioCodesFormat`). It is its own section, not a variant of "maestro", because variants
are layouts of one dataset with one tokenizer, whereas audio codes have their own vocabulary
(levels x 1024), sampling constraint and models (the paper's audio and symbolic results are
separate rows). The demo is a synthetic codes corpus (``repro/data/demos/maestro_audio.py``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from repro.config import ConfigError
from repro.data.source import SPLITS, DataError, RawDoc, RawFormat, SourceFile, Tokenizer, tokenizer_from_manifest


class AudioCodes(Tokenizer):
    """Residual-VQ codes [frames, levels] interleaved per frame: content index f * levels + l
    holds ``l * codes_per_level + code[f, l]`` (vocab levels x codes_per_level), the layout of
    the official ``process_logits`` and of ``repro.sample.sampler.codebook_constraint(levels,
    codes_per_level)``: after SOS (offset 0) the token at offset o is of level (o - 1) mod levels."""

    _RE = re.compile(r"^rvq-codes:(\d+)x(\d+)$")

    def __init__(self, levels: int, codes_per_level: int = 1024):
        if levels < 1 or codes_per_level < 1:
            raise ValueError(f"levels={levels} and codes_per_level={codes_per_level} must be >= 1")
        self.levels, self.codes_per_level = int(levels), int(codes_per_level)
        self.vocab_size = self.levels * self.codes_per_level
        self.identity = f"rvq-codes:{self.levels}x{self.codes_per_level}"

    @classmethod
    def from_identity(cls, identity: str) -> AudioCodes:
        m = cls._RE.match(identity)
        if not m:
            raise ValueError(f"'{identity}' is not an audio-codes identity (e.g. rvq-codes:24x1024)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __eq__(self, other) -> bool:
        return isinstance(other, AudioCodes) and other.identity == self.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def interleave(self, codes_FxL: np.ndarray) -> np.ndarray:
        codes_FxL = np.asarray(codes_FxL, np.int64)
        return (codes_FxL + np.arange(self.levels) * self.codes_per_level).reshape(-1).astype(np.int32)

    def encode(self, codes_FxL: np.ndarray) -> np.ndarray:
        """Codes [frames, levels] -> content ids (:meth:`interleave`, the inverse of :meth:`decode`);
        ValueError for another number of levels or a code outside [0, codes_per_level)."""
        c = np.asarray(codes_FxL)
        if c.ndim != 2 or c.shape[1] != self.levels:
            raise ValueError(f"codes must be [frames, {self.levels}], got shape {c.shape}")
        if c.size and (c.min() < 0 or c.max() >= self.codes_per_level):
            raise ValueError(f"codes must be in [0, {self.codes_per_level}), got {c.min()}..{c.max()}")
        return self.interleave(c)

    def decode(self, content: np.ndarray) -> np.ndarray:
        """Content ids -> codes [frames, levels] (a trailing partial frame is dropped); ValueError
        when an id is not of its position's level."""
        c = np.asarray(content, np.int64).ravel()
        c = c[: len(c) - len(c) % self.levels].reshape(-1, self.levels)
        level = c // self.codes_per_level
        if (level != np.arange(self.levels)).any():
            f, l = np.argwhere(level != np.arange(self.levels))[0]
            raise ValueError(f"id {c[f, l]} at frame {f}, level {l} is not a level-{l} code")
        return (c - np.arange(self.levels) * self.codes_per_level).astype(np.int32)


def check_codes(path: Path, codes, levels: int | None, codes_per_level: int) -> np.ndarray:
    """A [frames, levels] array of integer codes in [0, codes_per_level), or DataError naming ``path``."""
    a = np.asarray(codes)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"{path}: codes must be [frames, levels], got shape {a.shape}")
    if levels is not None and a.shape[1] != levels:
        raise DataError(f"{path}: {a.shape[1]} levels, the corpus has {levels} (shape must be [frames, levels])")
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{path}: codes must be integers, got {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= codes_per_level:
        raise DataError(f"{path}: code values {lo}..{hi} are outside 0..{codes_per_level - 1}")
    return a


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable .npy ({e})") from None


class AudioCodesFormat(RawFormat):
    """Pre-computed residual-VQ codes (SoundStream-like) of audio, one ``.npy`` per recording.

    Layouts (``variant``): "csv": ``codes.csv`` with columns ``codes_filename,split`` (paths
    relative to the folder); "folders": ``train/ validation/ test/*.npy``. Each file holds an
    integer array [frames, levels] with values < codes_per_level (1024). There is no common
    standard code file: EnCodec's ``.ecdc`` bit-packs (or entropy-codes, with its LM) the same
    frame-major, level-minor order behind a json header, but its segmentation needs the model;
    EnCodec / DAC return codes as [batch, levels, frames] tensors, so save ``codes[0].T``.
    """

    section = "maestro_audio"
    OPTIONS = ("levels", "codes_per_level")

    def variant(self, source: Path) -> str:
        source = Path(source)
        if (source / "codes.csv").is_file():
            return "csv"
        if any((source / s).is_dir() for s in SPLITS):
            return "folders"
        raise DataError(f"{source}: no codes.csv and no train/ validation/ test/ folders of .npy codes")

    def scan(self, source: Path) -> dict[str, list[SourceFile]]:
        source = Path(source)
        out: dict[str, list[SourceFile]] = {s: [] for s in SPLITS}
        if self.variant(source) == "folders":
            for s in SPLITS:
                out[s] = [SourceFile(s, p) for p in sorted((source / s).glob("*.npy"))] if (source / s).is_dir() else []
            if not any(out.values()):
                raise DataError(f"{source}: the split folders hold no .npy files")
            return out
        table = source / "codes.csv"
        try:
            with open(table, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                header = reader.fieldnames or []
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{table}: unreadable ({e})") from None
        missing = [c for c in ("codes_filename", "split") if c not in header]
        if missing:
            raise DataError(f"{table}: missing column(s) {', '.join(missing)}")
        if not rows:
            raise DataError(f"{table}: the table has no rows")
        for n, row in enumerate(rows, start=2):
            split, name = (row["split"] or "").strip(), (row["codes_filename"] or "").strip()
            if split not in out:
                raise DataError(f"{table}: row {n}: split '{split}' is not one of {', '.join(SPLITS)}")
            path = source / name
            if not name or not path.is_file():
                raise DataError(f"{table}: row {n}: codes file '{name}' is missing ({path})")
            out[split].append(SourceFile(split, path))
        return out

    def fit_tokenizer(self, train_files: list[SourceFile], out_dir: Path, options: dict[str, Any]) -> Tokenizer:
        """Options ``levels`` (default: the first training file's) and ``codes_per_level`` (1024)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(f"unknown audio-codes option(s) {', '.join(unknown)} (known: {', '.join(self.OPTIONS)})")
        cpl = int(options.get("codes_per_level", 1024))
        levels = options.get("levels")
        if levels is None:
            if not train_files:
                raise DataError("audio codes: no training files to take the number of levels from")
            first = train_files[0].path
            levels = check_codes(first, _load_npy(first), None, cpl).shape[1]
        try:
            return AudioCodes(int(levels), cpl)
        except ValueError as e:
            raise ConfigError(f"audio-codes options {options}: {e}") from None

    def load_tokenizer(self, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
        return tokenizer_from_manifest(AudioCodes, corpus_dir, manifest)

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        if not isinstance(tokenizer, AudioCodes):
            raise DataError(f"{f.label}: audio codes need an AudioCodes tokenizer, got '{tokenizer.identity}'")
        codes = check_codes(f.path, _load_npy(f.path), tokenizer.levels, tokenizer.codes_per_level)
        yield RawDoc(content=tokenizer.interleave(codes), name=f.path.name, num_bytes=f.path.stat().st_size)

    def demo(self, out: Path) -> Path:
        """A tiny synthetic codes corpus (4 levels x 1024, 16 files of 256 frames;
        ``repro.data.demos.maestro_audio``)."""
        from repro.data.demos.maestro_audio import synthetic_codes

        return synthetic_codes(Path(out) / "maestro_audio_codes", levels=4, frames=256, n_files=16, seed=0)


FORMAT = AudioCodesFormat()
