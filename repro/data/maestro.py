"""MAESTRO (paper Section 5.6): symbolic piano performances, and audio as residual-VQ codes.

Symbolic (``section="maestro"``, :data:`FORMAT`). The official layout, as released by Magenta::

    maestro-v3.0.0/
        maestro-v3.0.0.csv     canonical_composer, canonical_title, split, year, midi_filename,
        maestro-v3.0.0.json    audio_filename, duration (same table; the csv is read when present)
        2004/ ... 2018/*.midi  (midi_filename is relative to the folder, e.g. "2004/MIDI-...midi")

v1.0.0, v2.0.0 and v3.0.0 share the csv columns; the json is a list of row records in v1/v2 and
column-oriented ({"split": {"0": "train", ...}, ...}, pandas' default) in v3. The ``split``
column (train / validation / test) is used as is: never re-split. Each MIDI file is one document
of Magenta performance events (:mod:`repro.data.midi_events`); a corrupt, empty or drums-only file
is skipped with its reason.

Audio (``section="maestro_audio"``, :data:`AUDIO_FORMAT`): SoundStream is not available, so the
audio models read pre-computed residual-VQ codes (see :class:`AudioCodesFormat`). It is its own
section, not a variant of "maestro", because variants are layouts of one dataset with one
tokenizer, whereas audio codes have their own vocabulary (levels x 1024), sampling constraint
and models (the paper's audio and symbolic results are separate rows).

``demo(out)`` writes Bach chorales from the music21 wheel's corpus, converted to MIDI, in the
MAESTRO v3 layout (real music but engraved, not performed: constant velocity, no pedal).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repro.config import ConfigError
from repro.data.midi_events import PerformanceEncoding, load_midi
from repro.data.source import SPLITS, DataError, RawDoc, RawFormat, SkipFile, SourceFile, Tokenizer

# Performances per split of the official MAESTRO releases (v1.0.0: 1,184; v2.0.0: 1,282; v3.0.0: 1,276).
OFFICIAL_SPLITS = {
    "v1": {"train": 954, "validation": 105, "test": 125},
    "v2": {"train": 967, "validation": 137, "test": 178},
    "v3": {"train": 962, "validation": 137, "test": 177},
}
COLUMNS = ("canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration")
_TABLE_RE = re.compile(r"^maestro-v(\d+)\.(\d+)\.(\d+)\.(csv|json)$")
ENCODING_OPTIONS = ("min_pitch", "max_pitch", "steps_per_second", "max_shift_steps", "velocity_bins")


def _tokenizer_identity(corpus_dir: Path, manifest: dict[str, Any]) -> str:
    tok = manifest.get("tokenizer")
    ident = tok.get("identity") if isinstance(tok, dict) else tok
    if not isinstance(ident, str):
        raise DataError(f"{corpus_dir}: the manifest has no tokenizer.identity")
    return ident


# -- the metadata table -------------------------------------------------------------------------


def _tokenizer_from_manifest(cls, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
    """``cls.from_identity`` of a prepared corpus's tokenizer; DataError naming the corpus."""
    try:
        return cls.from_identity(_tokenizer_identity(Path(corpus_dir), manifest))
    except ValueError as e:
        raise DataError(f"{corpus_dir}: {e}") from None


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
        return _tokenizer_from_manifest(PerformanceEncoding, corpus_dir, manifest)

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        """One document: the file's events. SkipFile for an unreadable, empty or drums-only file,
        or one with no note in the pitch range."""
        if not isinstance(tokenizer, PerformanceEncoding):
            raise DataError(f"{f.label}: MAESTRO needs a PerformanceEncoding tokenizer, got '{tokenizer.identity}'")
        yield RawDoc(content=encode_file(f.path, tokenizer), name=_doc_name(f.path), num_bytes=f.path.stat().st_size)

    def demo(self, out: Path) -> Path:
        """Bach chorales (music21 corpus) in the MAESTRO v3 layout under ``out``; see :func:`build_demo`."""
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


# -- the demo: Bach chorales in the MAESTRO v3 layout ------------------------------------------

DEMO_VERSION = "maestro-v3.0.0"
DEMO_YEAR = "2004"
DEMO_SPLIT = ((0.8, "train"), (0.9, "validation"), (1.0, "test"))
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".mid", ".midi")


@dataclass
class DemoResult:
    source: Path
    pieces: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    music_seconds: float = 0.0
    reused: bool = False


def demo_split(name: str) -> str:
    """A piece's split from its name (md5 bucket, 80/10/10): fixed whatever the subset."""
    u = int(hashlib.md5(name.encode()).hexdigest()[:8], 16) / 16**8
    return next(s for p, s in DEMO_SPLIT if u < p)


def _quotas(n: int, available: dict[str, int]) -> dict[str, int]:
    """Pieces per split for a subset of n: at least one validation and one test piece (n >= 3)."""
    val = min(available["validation"], max(1, round(0.1 * n))) if n >= 3 else 0
    test = min(available["test"], max(1, round(0.1 * n))) if n >= 3 else 0
    return {"train": n - val - test, "validation": val, "test": test}


@contextmanager
def _time_limit(seconds: float):
    """TimeoutError after ``seconds`` (SIGALRM; a no-op off the main thread or without it)."""
    usable = seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise TimeoutError(f"over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def bach_scores() -> list[Path]:
    """The Bach pieces of the music21 corpus (scores, not .rntxt analyses), one file per piece
    (the .mxl where a piece also has a .krn), sorted by name."""
    from music21 import corpus

    rank = {s: i for i, s in enumerate(_SCORE_SUFFIXES)}
    best: dict[str, Path] = {}
    for p in sorted(Path(p) for p in corpus.getComposer("bach")):
        if p.suffix in rank and (p.stem not in best or rank[p.suffix] < rank[best[p.stem].suffix]):
            best[p.stem] = p
    return sorted(best.values(), key=lambda p: p.name)


def _convert(score: Path, timeout_s: float) -> bytes:
    import music21
    from music21 import corpus, midi

    with _time_limit(timeout_s):
        stream = corpus.parse(str(score))
        old = music21.defaults.ticksPerQuarter
        music21.defaults.ticksPerQuarter = 480  # music21's 10,080 trips pretty_midi's MAX_TICK on long pieces
        try:
            return midi.translate.streamToMidiFile(stream).writestr()
        finally:
            music21.defaults.ticksPerQuarter = old


def build_demo(out: Path, limit: int | None = None, timeout_s: float = 20.0) -> DemoResult:
    """Bach chorales -> ``out/maestro-v3.0.0/`` (``2004/bach-<bwv>.midi``, csv + v3 json).

    ``limit``: how many pieces (None: all ~410, about 1.5-3 minutes on one core); a subset keeps
    each piece's split (md5 of its name, 80/10/10) and has at least one validation and one test
    piece. Pieces that fail to parse or convert within ``timeout_s`` are skipped and listed.
    A finished demo with the same parameters is reused (``demo.json`` records them).
    """
    t0 = time.perf_counter()
    src = Path(out) / DEMO_VERSION
    info_path = src / "demo.json"
    params = {"limit": limit, "timeout_s": timeout_s}
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("params") == params and (src / f"{DEMO_VERSION}.csv").is_file():
            return DemoResult(src, info["pieces"], info["skipped"], 0.0, info["music_seconds"], reused=True)
    scores = bach_scores()
    if not scores:
        raise DataError("the music21 corpus has no Bach scores (is music21 installed with its corpus?)")
    by_split: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for p in scores:
        by_split[demo_split(p.stem)].append(p)
    n = len(scores) if limit is None else min(int(limit), len(scores))
    quota = (
        {s: len(v) for s, v in by_split.items()}
        if limit is None
        else _quotas(n, {s: len(v) for s, v in by_split.items()})
    )
    (src / DEMO_YEAR).mkdir(parents=True, exist_ok=True)
    rows, skipped, music = [], [], 0.0
    for split in SPLITS:
        done = 0
        for score in by_split[split]:
            if done >= quota[split]:
                break
            name = f"{DEMO_YEAR}/bach-{score.stem}.midi"
            try:
                data = _convert(score, timeout_s)
                duration = float(load_midi(data).get_end_time())
            except Exception as e:  # noqa: BLE001 - music21 raises many types on bad scores
                skipped.append(f"{score.name}: {type(e).__name__}: {str(e)[:120]}")
                continue
            (src / name).write_bytes(data)
            rows.append(
                {
                    "canonical_composer": "Johann Sebastian Bach",
                    "canonical_title": f"Chorale {score.stem.upper().replace('BWV', 'BWV ')}",
                    "split": split,
                    "year": DEMO_YEAR,
                    "midi_filename": name,
                    "audio_filename": name.replace(".midi", ".wav"),  # no audio in the demo
                    "duration": f"{duration:.3f}",
                }
            )
            music += duration
            done += 1
    _write_table(src, rows)
    pieces = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    (src / "README.txt").write_text(
        "MAESTRO-layout demo: Bach chorales from the music21 corpus, converted to MIDI.\n"
        "music21 (BSD-3); the corpus encodings are distributed with the permission of their\n"
        "encoders, some for non-commercial use only (music21/corpus/license.txt). Engraved\n"
        "music (constant velocity, no pedal): for exercising the pipeline, not for MAESTRO numbers.\n"
    )
    info = {"params": params, "pieces": pieces, "skipped": skipped, "music_seconds": round(music, 3)}
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    return DemoResult(src, pieces, skipped, time.perf_counter() - t0, music)


def _write_table(src: Path, rows: list[dict[str, str]]) -> None:
    with open(src / f"{DEMO_VERSION}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    typed = {"duration": float, "year": int}
    cols = {c: {str(i): typed.get(c, str)(r[c]) for i, r in enumerate(rows)} for c in COLUMNS}  # v3: column-oriented
    (src / f"{DEMO_VERSION}.json").write_text(json.dumps(cols, indent=1) + "\n")


# -- audio: residual-VQ codes -------------------------------------------------------------------


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
        return _tokenizer_from_manifest(AudioCodes, corpus_dir, manifest)

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        if not isinstance(tokenizer, AudioCodes):
            raise DataError(f"{f.label}: audio codes need an AudioCodes tokenizer, got '{tokenizer.identity}'")
        codes = check_codes(f.path, _load_npy(f.path), tokenizer.levels, tokenizer.codes_per_level)
        yield RawDoc(content=tokenizer.interleave(codes), name=f.path.name, num_bytes=f.path.stat().st_size)

    def demo(self, out: Path) -> Path:
        """A tiny synthetic codes corpus (4 levels x 1024, 16 files of 256 frames)."""
        return synthetic_codes(Path(out) / "maestro_audio_codes", levels=4, frames=256, n_files=16, seed=0)


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


AUDIO_FORMAT = AudioCodesFormat()
