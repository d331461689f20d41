"""One schema for every result file: training's ``results.json`` and ``repro eval``'s
``evals/<protocol>.json``. ``repro report`` reads only this.

A row holds: the schema version; what ran (section, preset, scale, the resolved config); on what
data (dataset name, variant, whether it is the paper's data, the prepared corpus's name, manifest
hash and data hash, split, evaluation protocol); the headline metric with its unit and standard error; every other
metric; the simple baselines measured in the same run; steps, tokens seen, parameter count, wall
time; where (device kind and count, git SHA, package versions, date); and the paper's value where
one exists for this preset. ``reproduction`` is true only for a paper-scale preset on the
paper's data: a demo-corpus or scaled-down row can never be read as the paper's number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from repro.config import Experiment, experiment_to_dict

SCHEMA_VERSION = 1


class ResultsError(ValueError):
    """A result file that is not of this schema."""


def make_row(
    *,
    kind: str,
    exp: Experiment,
    section,
    dataset,
    split: str,
    metrics: dict[str, Any],
    steps: int,
    num_params: int,
    tokens_seen: float | None = None,
    wall_seconds: float | None = None,
    baselines: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A result row (see the module docstring). ``kind``: "train" (the end of ``repro run``) or
    "eval" (``repro eval``); ``section``: the :class:`repro.section.Section`; ``dataset``: a
    :class:`repro.data.source.DatasetInfo`."""
    from repro.runinfo import device_info, git_sha, git_sha_now, now, versions

    h = section.headline
    value = metrics.get(h.key)
    paper = [
        {k: getattr(p, k) for k in ("table", "model", "metric", "unit", "split", "value", "source", "note")}
        for p in section.paper_numbers
        if p.preset == exp.preset
    ]
    dev = device_info()
    row = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "section": exp.section,
        "preset": exp.preset,
        "scale": exp.scale,
        "reproduction": exp.scale == "paper" and bool(dataset.is_paper_data),
        "dataset": {
            "name": dataset.name,
            "variant": dataset.variant,
            "is_paper_data": bool(dataset.is_paper_data),
            "manifest_hash": dataset.manifest_hash,
            "corpus": getattr(dataset, "corpus", ""),  # the prepared corpus ("main": the user's; "demo")
            "data_hash": getattr(dataset, "data_hash", ""),  # the store's content (repro/data/store.py)
        },
        "split": split,
        "protocol": metrics.get("protocol"),
        "headline": {
            "key": h.key,
            "label": h.label,
            "unit": h.unit,
            "value": value,
            "stderr": metrics.get(f"{h.key}_stderr"),
            "higher_is_better": h.higher_is_better,
        },
        "metrics": metrics,
        "baselines": baselines or {},
        "paper": paper,
        "steps": int(steps),
        "tokens_seen": tokens_seen,
        "num_params": int(num_params),
        "wall_seconds": wall_seconds,
        "device": {"kind": dev["kind"], "platform": dev["platform"], "count": dev["count"], **dev},
        "git_sha": git_sha(),
        "versions": versions(),
        "date": now(),
        "config": experiment_to_dict(exp),
    }
    now_sha = git_sha_now()
    if now_sha != row["git_sha"]:  # the checkout moved while this process ran
        row["git_sha_at_write"] = now_sha
    row.update(extra or {})
    return row


def write_row(path: Path, row: dict[str, Any]) -> None:
    from repro.runinfo import write_json_atomic

    write_json_atomic(Path(path), row)


def read_row(path: Path) -> dict[str, Any]:
    """A result row, checked to be of this schema (ResultsError otherwise)."""
    try:
        row = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not a readable result file ({e})") from None
    if not isinstance(row, dict) or row.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path}: not a result of schema version {SCHEMA_VERSION}")
    return row
