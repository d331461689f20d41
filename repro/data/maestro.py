"""MAESTRO (paper Section 5.6): symbolic piano performances (``section="maestro"``, :data:`FORMAT`).

The official layout, as released by Magenta::

    maestro-v3.0.0/
        maestro-v3.0.0.csv     canonical_composer, canonical_title, split, year, midi_filename,
        maestro-v3.0.0.json    audio_filename, duration (same table; the csv is read when present)
        2004/ ... 2018/*.midi  (midi_filename is relative to the folder, e.g. "2004/MIDI-...midi")

v1.0.0, v2.0.0 and v3.0.0 share the csv columns; the json is a list of row records in v1/v2 and
column-oriented ({"split": {"0": "train", ...}, ...}, pandas' default) in v3. The ``split``
column (train / validation / test) is used as is: never re-split. Each MIDI file is one document
of Magenta performance events (:mod:`repro.data.midi_events`); a corrupt, empty or drums-only file
is skipped with its reason.

The audio section (residual-VQ codes) is ``repro/data/maestro_audio.py``. ``demo(out)`` writes
Bach chorales from the music21 wheel's corpus, converted to MIDI, in the MAESTRO v3 layout
(``repro/data/demos/maestro.py``).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from repro.config import ConfigError
from repro.data.midi_events import PerformanceEncoding, load_midi
from repro.data.source import (
    SPLITS,
    DataError,
    RawDoc,
    RawFormat,
    SkipFile,
    SourceFile,
    Tokenizer,
    tokenizer_from_manifest,
)

# Performances per split of the official MAESTRO releases (v1.0.0: 1,184; v2.0.0: 1,282; v3.0.0: 1,276).
OFFICIAL_SPLITS = {
    "v1": {"train": 954, "validation": 105, "test": 125},
    "v2": {"train": 967, "validation": 137, "test": 178},
    "v3": {"train": 962, "validation": 137, "test": 177},
}
COLUMNS = ("canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration")
_TABLE_RE = re.compile(r"^maestro-v(\d+)\.(\d+)\.(\d+)\.(csv|json)$")
ENCODING_OPTIONS = ("min_pitch", "max_pitch", "steps_per_second", "max_shift_steps", "velocity_bins")


# -- the metadata table -------------------------------------------------------------------------


def _tables(source: Path) -> list[Path]:
    return sorted(p for p in source.iterdir() if p.is_file() and _TABLE_RE.match(p.name))


def find_table(source: Path) -> Path:
    """The metadata table of a MAESTRO folder: ``maestro-vX.Y.Z.csv``, else the ``.json``."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: not a folder (expected a MAESTRO folder such as maestro-v3.0.0/)")
    tables = _tables(source)
    if not tables:
        inner = sorted(p.name for p in source.iterdir() if p.is_dir() and p.name.startswith("maestro-v"))
        hint = f" (did you mean {source / inner[0]}?)" if inner else ""
        raise DataError(f"{source}: no maestro-vX.Y.Z.csv or .json metadata table{hint}")
    versions = {_TABLE_RE.match(p.name).group(1, 2, 3) for p in tables}
    if len(versions) > 1:
        names = ", ".join(p.name for p in tables)
        raise DataError(f"{source}: metadata tables of several MAESTRO versions ({names}); keep one")
    csvs = [p for p in tables if p.suffix == ".csv"]
    return csvs[0] if csvs else tables[0]


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of a MAESTRO csv or json table (v1/v2 json: row records; v3: column-oriented)."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                header = reader.fieldnames or []
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list):  # v1 / v2: [{"split": ..., "midi_filename": ...}, ...]
                if not all(isinstance(r, dict) for r in data):
                    raise DataError(f"{path}: a list json table must hold one object per row")
                rows = data
                header = list(data[0]) if data else []
            elif isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):  # v3
                header = list(data)
                keys = list(data.get("midi_filename", {}))
                order = sorted(keys, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))
                rows = [{c: data[c].get(k) for c in header} for k in order]
            else:
                raise DataError(f"{path}: expected a list of rows (v1/v2) or a column-oriented object (v3)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise DataError(f"{path}: unreadable metadata table ({e})") from None
    missing = [c for c in ("split", "midi_filename") if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, header))})")
    if not rows:
        raise DataError(f"{path}: the table has no rows")
    return [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]


def _variant_of(table: Path) -> str:
    return "v" + _TABLE_RE.match(table.name).group(1)


def _doc_name(path: Path) -> str:
    """``midi_filename`` of a file: its path relative to the folder holding the metadata table."""
    for parent in list(path.parents)[:3]:
        if parent.is_dir() and _tables(parent):
            return path.relative_to(parent).as_posix()
    return path.name


# -- the symbolic format ------------------------------------------------------------------------


class MaestroFormat(RawFormat):
    """MAESTRO v1/v2/v3 MIDI -> Magenta performance events (one document per performance)."""

    section = "maestro"

    def variant(self, source: Path) -> str:
        """The MAESTRO version ("v1", "v2", "v3") from the metadata table's file name."""
        return _variant_of(find_table(Path(source)))

    def resolve_source(self, source: Path) -> tuple[Path, str | None]:
        """``source`` itself when it holds a metadata table, else the one ``maestro-vX.Y.Z/``
        folder inside it that does (``repro data demo maestro --out DIR`` writes DIR/maestro-v3.0.0/)."""
        source = Path(source)
        if not source.is_dir() or _tables(source):
            return source, None
        inner = [p for p in sorted(source.iterdir()) if p.is_dir() and p.name.startswith("maestro-v") and _tables(p)]
        if len(inner) == 1:
            return inner[0], f"using {inner[0]}: the one MAESTRO folder in {source}"
        return source, None

    def official_documents(self, variant: str) -> dict[str, int] | None:
        """Performances per split of the official releases (magenta.tensorflow.org/datasets/maestro)."""
        return OFFICIAL_SPLITS.get(variant)

    def scan(self, source: Path) -> dict[str, list[SourceFile]]:
        """The MIDI files of each split in table order; DataError for a bad split value, a
        repeated, absolute or escaping midi_filename, or a file the table names that is missing."""
        source = Path(source)
        table = find_table(source)
        out: dict[str, list[SourceFile]] = {s: [] for s in SPLITS}
        seen: set[str] = set()
        root = source.resolve()
        for n, row in enumerate(read_table(table), start=2 if table.suffix == ".csv" else 1):
            split, name = row["split"].strip(), row["midi_filename"].strip()
            where = f"{table.name} row {n}"
            if split not in out:
                raise DataError(f"{table}: {where}: split '{split}' is not one of {', '.join(SPLITS)}")
            if not name:
                raise DataError(f"{table}: {where}: empty midi_filename")
            path = source / name
            if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
                raise DataError(f"{table}: {where}: midi_filename '{name}' is not inside {source}")
            if name in seen:
                raise DataError(f"{table}: {where}: midi_filename '{name}' is listed twice")
            seen.add(name)
            if not path.is_file():
                raise DataError(f"{table}: {where}: MIDI file '{name}' is missing ({path})")
            out[split].append(SourceFile(split, path))
        return out

    def fit_tokenizer(self, train_files: list[SourceFile], out_dir: Path, options: dict[str, Any]) -> Tokenizer:
        """The fixed performance encoding; options ``min_pitch``/``max_pitch`` (21/108, Magenta's
        code; 0/127 = the Music Transformer paper's 388 events), ``steps_per_second`` (100),
        ``max_shift_steps`` (= steps_per_second), ``velocity_bins`` (32). No files."""
        return encoding_from_options(options)

    def load_tokenizer(self, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
        return tokenizer_from_manifest(PerformanceEncoding, corpus_dir, manifest)

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        """One document: the file's events. SkipFile for an unreadable, empty or drums-only file,
        or one with no note in the pitch range."""
        if not isinstance(tokenizer, PerformanceEncoding):
            raise DataError(f"{f.label}: MAESTRO needs a PerformanceEncoding tokenizer, got '{tokenizer.identity}'")
        yield RawDoc(content=encode_file(f.path, tokenizer), name=_doc_name(f.path), num_bytes=f.path.stat().st_size)

    def demo(self, out: Path) -> Path:
        """Bach chorales (music21 corpus) in the MAESTRO v3 layout under ``out``; see
        ``repro.data.demos.maestro.build_demo``."""
        from repro.data.demos.maestro import build_demo

        return build_demo(Path(out)).source


def encoding_from_options(options: dict[str, Any] | None) -> PerformanceEncoding:
    options = dict(options or {})
    unknown = sorted(set(options) - set(ENCODING_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown MAESTRO data option(s) {', '.join(unknown)} (known: {', '.join(ENCODING_OPTIONS)})")
    try:
        return PerformanceEncoding(**{k: int(v) for k, v in options.items()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"MAESTRO data options {options}: {e}") from None


def encode_file(path: Path, encoding: PerformanceEncoding) -> np.ndarray:
    """A MIDI file's events; SkipFile (with the reason) for a file that gives none."""
    try:
        pm = load_midi(path)
    except Exception as e:  # noqa: BLE001 - pretty_midi / mido raise many types for bad files
        raise SkipFile(f"unreadable MIDI ({type(e).__name__}: {e})") from None
    all_notes = [n for inst in pm.instruments for n in inst.notes]
    if not all_notes:
        raise SkipFile("no notes")
    if all(inst.is_drum for inst in pm.instruments if inst.notes):
        raise SkipFile("drums only")
    try:
        ids = encoding.encode_midi(pm)
    except ValueError as e:
        raise SkipFile(str(e)) from None
    if len(ids) == 0:
        raise SkipFile(f"no notes in the pitch range {encoding.min_pitch}-{encoding.max_pitch}")
    return ids


FORMAT = MaestroFormat()
