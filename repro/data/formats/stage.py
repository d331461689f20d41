"""Staging: another layout of a dataset rewritten as its official layout, so that one reader
(and one tokenizer training input) serves them all and the prepared stores are byte-identical.

A format that reads a converted layout (Hub parquet, TFDS TFRecords) writes the official files
into a staging folder (:func:`staging_dir`: ``$TMPDIR/repro-stage-<pid>-*``, removed when the
process exits; folders left by a killed process are removed by the next one) and hands the store
:class:`StagedFile` s: the staged file to read, labelled by where its content came from, so
messages, the skipped list and the manifest's source hash name the user's files.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from repro.data.source import SourceFile

PREFIX = "repro-stage-"


@dataclass(frozen=True)
class StagedFile(SourceFile):
    """A staged official file; ``origin`` (e.g. ``.../train-00000-of-00002.parquet:10146``) is its label."""

    origin: str = ""

    @property
    def label(self) -> str:
        return self.origin or super().label


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path) -> None:
    for d in root.glob(f"{PREFIX}*"):
        pid = d.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def staging_dir(what: str) -> Path:
    """A fresh staging folder for this process (removed at exit)."""
    root = Path(tempfile.gettempdir())
    _remove_stale(root)
    d = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{what}-", dir=root))
    atexit.register(shutil.rmtree, d, True)
    return d


def relabel(files: dict[str, list[SourceFile]], origin: dict[Path, str]) -> dict[str, list[SourceFile]]:
    """The official scan of a staged folder, each file labelled by ``origin[path]``."""
    return {
        split: [StagedFile(f.split, f.path, f.member, origin.get(Path(f.path), "")) for f in fs]
        for split, fs in files.items()
    }
