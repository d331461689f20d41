"""The MAESTRO demo (``repro data demo maestro``): Bach chorales from the music21 wheel's corpus,
converted to MIDI and written in the MAESTRO v3 layout (``maestro-v3.0.0/`` with its csv and json
tables): real music but engraved, not performed (constant velocity, no pedal).
"""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from repro.data.maestro import COLUMNS
from repro.data.midi_events import load_midi
from repro.data.source import SPLITS, DataError

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
