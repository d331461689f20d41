"""Hugging Face Hub parquet files (what ``huggingface-cli download`` leaves), read with pyarrow.

Two layouts of a dataset config folder ``d`` are found (``split_files``):

    "hub"        d/<split>-00000-of-00002.parquet ...   (the dataset repository's main branch)
    "converted"  d/<split>/0000.parquet ...             (the Hub's parquet conversion, refs/convert/parquet)

pyarrow is an optional extra (``pip install 'repro[hub]'``); without it a parquet source stops
with one line saying so. Every bad file is one DataError line that names it: not parquet or
corrupt, a column missing or not a string, null values, or no rows at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from repro.data.source import SPLITS, DataError

INSTALL_HINT = "pip install 'repro[hub]' (or: pip install pyarrow)"
LAYOUTS = ("hub", "converted")


def _pq(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Hugging Face parquet files needs pyarrow; {INSTALL_HINT}") from None
    return pq


def _shard_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def split_files(d: Path, splits: tuple[str, ...] = SPLITS) -> tuple[str, dict[str, list[Path]]] | None:
    """(layout, split -> parquet files in shard order) of folder ``d``, or None when ``d`` holds
    no train parquet file in either layout. A split without files maps to []."""
    d = Path(d)
    for layout in LAYOUTS:
        found = {}
        for split in splits:
            if layout == "hub":
                files = [p for p in d.glob(f"{split}-*.parquet") if p.is_file()]
            else:
                files = [p for p in (d / split).glob("*.parquet") if p.is_file()] if (d / split).is_dir() else []
            found[split] = sorted(files, key=_shard_key)
        if found.get("train"):
            return layout, found
    return None


def describe(d: Path) -> str:
    """What ``split_files`` looks for in ``d``, for a one-line "nothing found" message."""
    return f"{d}/train-*.parquet (Hub) or {d}/train/*.parquet (Hub parquet conversion)"


def rows(path: Path, columns: tuple[str, ...], what: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(row index, {column: value}) of every row of a parquet file, streamed by record batch.
    ``what`` names the expected schema in messages (e.g. "the Hub's WikiText-103 parquet has one
    string column 'text'"). DataError naming ``path`` for an unreadable file, a missing or
    non-string column, a null value, or a file without rows."""
    pq = _pq(path)
    import pyarrow as pa

    try:
        f = pq.ParquetFile(path)
        schema = f.schema_arrow
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:160]})") from None
    names = list(schema.names)
    for c in columns:
        if c not in names:
            raise DataError(f"{path}: no column '{c}' (columns: {', '.join(names) or 'none'}); {what}")
        t = schema.field(c).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise DataError(f"{path}: column '{c}' is {t}, not a string; {what}")
    if f.metadata.num_rows == 0:
        raise DataError(f"{path}: no rows (an empty split)")
    i = 0
    try:
        for batch in f.iter_batches(batch_size=1024, columns=list(columns)):
            cols = {c: batch.column(c).to_pylist() for c in columns}
            for j in range(batch.num_rows):
                row = {c: cols[c][j] for c in columns}
                for c, v in row.items():
                    if v is None:
                        raise DataError(f"{path}: row {i}: column '{c}' is null")
                yield i, row
                i += 1
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: corrupt parquet data after row {i} ({str(e).splitlines()[0][:160]})") from None
