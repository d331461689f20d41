"""Provenance recorded beside every result: git SHA, device, package versions, time."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


_FIRST_SHA: str | None = None


def git_sha() -> str:
    """The code this process runs: HEAD of the repo this package lives in (``-dirty`` with
    uncommitted changes) as read at the first call, which a run makes when it starts; a checkout
    that moves while a run trains does not change it (``git_sha_now`` reads it again)."""
    global _FIRST_SHA
    if _FIRST_SHA is None:
        _FIRST_SHA = git_sha_now()
    return _FIRST_SHA


def git_sha_now() -> str:
    """HEAD of the repo this package lives in, with ``-dirty`` if its code has uncommitted changes
    (files under ``results/`` are outputs, not code, and do not count)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"],
            cwd=here, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_info() -> dict[str, Any]:
    d = jax.devices()[0]
    return {
        "platform": d.platform,
        "kind": d.device_kind,
        "count": jax.device_count(),
        "processes": jax.process_count(),
        "host": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def provenance(produced_by: str | None = None) -> dict[str, Any]:
    """What every record under ``results/`` carries beside its numbers: the git SHA of the code,
    the device, package versions, the date and, when given, the command that produced it."""
    out = {"git_sha": git_sha(), "device": device_info(), "versions": versions(), "date": now()}
    if produced_by is not None:
        out["produced_by"] = produced_by
    return out


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in the same directory, fsync, then rename over ``path``:
    a reader sees the old file or the new one, never half of one; a failure (a full disk, a
    read-only filesystem) leaves no partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes the file private (0600); results are to be read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (:func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())
