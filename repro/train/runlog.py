"""``metrics.jsonl``: an append-only, crash-safe log of a run (one JSON object per line).

The file is never rewritten in place. A resumed run appends ``{"event": "resume", "step": s}``;
readers (:func:`read_metrics`) then drop the rows logged after step ``s`` by the interrupted
session, so the log reads as if the run had never stopped, without destroying anything on disk.
A torn last line (a kill or a full disk in the middle of a write) is skipped with a warning,
and the next append starts on a fresh line, so one bad write never blocks a rerun.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_metrics(path: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The rows of a run log, with rows superseded by a later resume dropped and damaged lines
    skipped (each reported through ``warn``)."""
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError
        except ValueError:
            if warn:
                warn(f"{path}: line {n} is damaged (a torn write?) and is skipped")
            continue
        if row.get("event") == "resume":
            s = int(row.get("step", 0))
            rows = [r for r in rows if r.get("step", 0) <= s]
            continue
        rows.append(row)
    return rows


class RunLog:
    """Appends rows to ``metrics.jsonl`` (flushed per row; only the main process writes)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def _open(self):
        f = open(self.path, "ab")
        if f.tell() > 0:  # a torn last line: start the next row on a line of its own
            with open(self.path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        return f

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self._open() as f:
            f.write((json.dumps(row) + "\n").encode())
            f.flush()

    def resume(self, step: int) -> None:
        self.append({"event": "resume", "step": int(step)})
