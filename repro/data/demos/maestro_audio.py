"""The maestro_audio demo (``repro data demo maestro_audio``): a synthetic residual-VQ codes corpus
in the "csv" layout of ``repro/data/maestro_audio.py`` (SoundStream is not available; not audio)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def synthetic_codes(out: Path, levels: int = 4, frames: int = 256, n_files: int = 16, seed: int = 0,
                    codes_per_level: int = 1024) -> Path:  # fmt: skip
    """A synthetic codes corpus in the "csv" layout (``codes.csv`` + ``codes/*.npy`` int16/int32
    [frames, levels]) with learnable structure: level 0 is a slow random walk, each deeper level
    a noisy function of the level above (as residual codes depend on coarser ones). Split 80/10/10
    by file index (at least one validation and one test file when n_files >= 3)."""
    if levels < 1 or frames < 1 or n_files < 1:
        raise ValueError(f"levels={levels}, frames={frames} and n_files={n_files} must be >= 1")
    out = Path(out)
    (out / "codes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_eval = max(1, round(0.1 * n_files)) if n_files >= 3 else 0
    splits = ["train"] * (n_files - 2 * n_eval) + ["validation"] * n_eval + ["test"] * n_eval
    rows = []
    for i, split in enumerate(splits):
        c = np.empty((frames, levels), np.int64)
        c[:, 0] = np.cumsum(rng.integers(-3, 4, frames)) + rng.integers(codes_per_level)
        for lv in range(1, levels):
            c[:, lv] = c[:, lv - 1] * 7 + 13 * lv + rng.integers(0, 4, frames)
        c %= codes_per_level
        name = f"codes/piece_{i:03d}.npy"
        np.save(out / name, c.astype(np.int16 if codes_per_level <= 32768 else np.int32))
        rows.append({"codes_filename": name, "split": split})
    with open(out / "codes.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["codes_filename", "split"])
        w.writeheader()
        w.writerows(rows)
    return out
