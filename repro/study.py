"""Claims studies: sets of ordinary runs that differ along one axis, and a verdict from one rule.

A :class:`Study` is data (``experiments/studies.py`` holds them all): the paper's claim with its
source tag, the section, and per scale a :class:`Design` — the base preset, the overrides every
point shares, the points (each a few ``--set`` overrides and an axis value), the seeds, the one
evaluation protocol, split and document count every point is scored under, and the comparisons
whose sign the claim predicts. Everything not on the axis is equal across points: data, steps,
batch, seeds, protocol (or, where a point says ``match_flops``, its steps are set so that its
training FLOPs equal the design's budget: equal compute, ``repro/flops.py``).

``run_study`` trains every (point, seed) as a normal run directory (``repro.app.run``: resumes,
never retrains a finished run; points whose training configs are identical share one run, e.g.
points that differ only in their evaluation protocol), evaluates each under the design's
protocol (``repro.app.evaluate_run``; an evaluation already on disk for the same checkpoint step
is reused), and writes ``study.json``: every point's numbers per seed, each comparison's effect
with its standard error and the verdict of :func:`verdict`. ``repro report`` reads only that file.

The verdict rule, fixed before any run (:func:`verdict`): the effect is
``metric(treatment) - metric(reference)`` averaged over seeds; its standard error combines the
evaluation's (each point's token-level standard error, the two points treated as independent:
conservative for the same held-out tokens) with the spread over seeds where there are several,
``se^2 = mean_s(se_eval,s^2) / S + var_s(effect_s) / S``. *holds at this scale* where the effect
has the paper's sign and exceeds 2 standard errors; *does not show* where the opposite sign
exceeds 2 standard errors; *inconclusive* otherwise, and always where two seeds disagree in sign.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

STUDY_SCHEMA = "repro-study/1"
HOLDS, DOES_NOT_SHOW, INCONCLUSIVE = "holds at this scale", "does not show", "inconclusive"
FALLBACK_FLOPS_PER_SECOND = 1e11  # --dry-run's estimate where no calibration record exists


@dataclass(frozen=True)
class Point:
    """One point of a study's axis: overrides on top of the design's, and the axis value."""

    name: str  # e.g. "N=512"; also the run directory's name
    x: float  # the axis value (plots, tables)
    set: tuple[str, ...] = ()  # --set overrides of this point
    preset: str = ""  # "" = the design's preset (e.g. "cpu_transformer" for a baseline point)
    protocol: str = ""  # "" = the design's protocol (the cache-reset study sweeps cached:F)
    series: str = "Perceiver AR"  # the plot's line this point belongs to
    match_flops: bool = False  # steps (and the cosine horizon) set so training FLOPs = budget


@dataclass(frozen=True)
class Comparison:
    """effect = metric(treatment) - metric(reference), or metric(treatment) - threshold."""

    treatment: str
    reference: str = ""  # a point name; "" = compare with ``threshold``
    threshold: float | None = None
    expected: Literal[-1, 1] = -1  # the sign the claim predicts (-1: the metric falls)
    what: str = ""  # in words, e.g. "context 2048 vs 128 at 128 latents"


@dataclass(frozen=True)
class Design:
    """A study at one scale (``smoke`` for tests, ``cpu`` for the recorded runs)."""

    preset: str
    points: tuple[Point, ...]
    comparisons: tuple[Comparison, ...]
    common: tuple[str, ...] = ()  # --set overrides of every point
    seeds: tuple[int, ...] = (0,)
    protocol: str = ""  # "" = the section's default protocol of the base preset
    split: str = "validation"
    max_examples: int | None = None  # documents scored (None = as many as training evaluates: data.eval_examples)
    flops_budget: str = ""  # the point whose training FLOPs every match_flops point gets (equal compute)
    curve_points: int = 0  # > 0: every run keeps this many checkpoints along its way, each evaluated (curves)
    note: str = ""  # what the design cannot show at this scale (printed with the study)


@dataclass(frozen=True)
class Study:
    name: str
    claim_id: str  # studies of one claim (e.g. in several modalities) share it
    claim: str  # the paper's statement, in words
    source: str  # its source tag and where it is in docs/paper_numbers.md
    section: str
    designs: dict[str, Design]
    metric: str = "nats_per_token"  # a key of the evaluation metrics (with <metric>_stderr)
    metric_label: str = "held-out nats/token"
    higher_is_better: bool = False
    axis: str = "context N (inputs)"
    log_x: bool = True
    proper_test: str = ""  # what it would take to test the claim properly

    def design(self, scale: str) -> Design:
        if scale not in self.designs:
            raise ValueError(f"study {self.name} has no '{scale}' design (available: {', '.join(self.designs)})")
        return self.designs[scale]


# ---------------------------------------------------------------------------------- the verdict


def verdict(effects: list[float], eval_stderrs: list[float], expected: int) -> dict[str, Any]:
    """The one verdict rule (module docstring): per-seed effects and their evaluation standard
    errors in, ``{"effect", "stderr", "z", "verdict", "why"}`` out."""
    S = len(effects)
    if S == 0 or len(eval_stderrs) != S or expected not in (-1, 1):
        raise ValueError("verdict() needs one effect and one evaluation stderr per seed, and expected -1 or +1")
    mean = sum(effects) / S
    eval_var = sum(se * se for se in eval_stderrs) / S / S
    seed_var = statistics.variance(effects) / S if S > 1 else 0.0
    se = math.sqrt(eval_var + seed_var) if math.isfinite(eval_var + seed_var) else math.nan
    z = mean / se if se and math.isfinite(se) else math.nan
    signs = {math.copysign(1, e) for e in effects if e != 0}
    out = {"effect": mean, "stderr": se, "z": z, "seeds": S}
    if not all(math.isfinite(v) for v in (*effects, *eval_stderrs)):
        return {**out, "verdict": INCONCLUSIVE, "why": "a number is missing or not finite"}
    if len(signs) > 1:
        return {**out, "verdict": INCONCLUSIVE, "why": "the seeds disagree in sign"}
    if expected * mean > 2 * se:
        return {**out, "verdict": HOLDS, "why": f"the claimed sign, {abs(z):.1f} standard errors"}
    if -expected * mean > 2 * se:
        return {**out, "verdict": DOES_NOT_SHOW, "why": f"the opposite sign, {abs(z):.1f} standard errors"}
    return {**out, "verdict": INCONCLUSIVE, "why": f"|effect| = {abs(z):.1f} standard errors (< 2)"}


def overall(verdicts: list[str]) -> str:
    """A study's verdict: its first comparison's (the claim); the others are shown beside it."""
    return verdicts[0] if verdicts else INCONCLUSIVE


# ---------------------------------------------------------------------------------- the points


@dataclass
class PointRun:
    point: Point
    seed: int
    exp: Any  # repro.config.Experiment
    workdir: Path
    protocol: str
    train_flops: float
    shared_with: str = ""  # the point whose run this one reuses ("" = its own)


def _seed_overrides(design: Design, seed: int) -> list[str]:
    return [] if design.seeds == (0,) else [f"train.seed={seed}", f"data.train_seed={seed}"]


def plan(study: Study, scale: str, root: Path) -> list[PointRun]:
    """Every (point, seed) of the study's ``scale`` design, with its resolved config and workdir."""
    from experiments import SECTIONS
    from repro.config import apply_overrides
    from repro.flops import train_step_flops
    from repro.train.loop import config_fingerprint

    design = study.design(scale)
    section = SECTIONS[study.section]

    def resolve(point: Point, seed: int):
        base = section.preset(point.preset or design.preset)
        return base, apply_overrides(base, [*design.common, *point.set, *_seed_overrides(design, seed)])

    budget = None
    if any(p.match_flops for p in design.points):
        ref = next((p for p in design.points if p.name == design.flops_budget and not p.match_flops), None)
        if ref is None:
            raise ValueError(f"study {study.name}: flops_budget must name a point that does not match FLOPs itself")
        e = resolve(ref, design.seeds[0])[1]
        budget, ref_steps = train_step_flops(e)["step"] * e.train.steps, e.train.steps
    runs, by_config = [], {}
    for point in design.points:
        for seed in design.seeds:
            base, exp = resolve(point, seed)
            if point.match_flops:
                # The same schedule shape over the point's own length: warm-up scaled by its steps.
                steps = max(1, round(budget / train_step_flops(exp)["step"]))
                warmup = round(exp.optim.warmup_steps * steps / ref_steps)
                more = [f"train.steps={steps}", f"optim.warmup_steps={warmup}"]
                if exp.optim.schedule == "cosine":
                    more.append(f"optim.decay_steps={steps}")
                exp = apply_overrides(exp, more)
            if design.curve_points:  # evenly spaced checkpoints over each run's own length, all kept
                every = max(1, exp.train.steps // design.curve_points)
                exp = apply_overrides(exp, [f"train.checkpoint_every={every}",
                                            f"train.keep_checkpoints={design.curve_points + 1}"])  # fmt: skip
            fp = config_fingerprint(exp) + f"/{exp.train.steps}"
            protocol = point.protocol or design.protocol or section.default_protocol(exp)
            flops = train_step_flops(exp)["step"] * exp.train.steps
            wd = root / point.name / f"seed{seed}"
            first = by_config.get(fp)  # the same training as an earlier point: evaluate that run
            r = PointRun(point, seed, exp, first.workdir if first else wd, protocol, flops,
                         first.point.name if first else "")  # fmt: skip
            by_config.setdefault(fp, r)
            runs.append(r)
    return runs


def estimate_seconds(runs: list[PointRun]) -> tuple[float, str]:
    """A rough training time and the throughput it assumes (``calibrate``, from the first point's
    own section and preset)."""
    flops_per_second, source = calibrate(runs[0].exp.section, runs[0].exp.preset)
    return sum(r.train_flops for r in runs if not r.shared_with) / flops_per_second, source


def calibrate(section: str, preset: str) -> tuple[float, str]:
    """Training FLOP/s from the recorded ``results/<section>/<preset>`` run where it exists (its
    FLOPs per step x steps / training seconds), else a constant measured once; and which it was."""
    rec = Path(__file__).resolve().parent.parent / "results" / section / preset / "results.json"
    try:
        import experiments  # noqa: F401 - registers the sections' data configs: the recorded config reads back
        from repro.config import experiment_from_dict
        from repro.flops import human, train_step_flops

        row = json.loads(rec.read_text())
        exp = experiment_from_dict(row["config"])
        rate = train_step_flops(exp)["step"] * row["steps"] / row["wall_seconds"]
        dev = row.get("device") or {}
        where = dev.get("kind", "?") + (f", {dev.get('cpus', '?')} cores" if dev.get("kind") == "cpu" else "")
        return rate, f"{human(rate)}FLOP/s of the recorded results/{section}/{preset} run ({where})"
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return FALLBACK_FLOPS_PER_SECOND, f"{FALLBACK_FLOPS_PER_SECOND:.0e} FLOP/s, a constant (no recorded run)"


# ---------------------------------------------------------------------------------- running


def _step_seconds(workdir: Path) -> float | None:
    """Median seconds per training step from the run's log (its ``time`` column), compile excluded."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "time" in r and "loss" in r:
            rows.append((r["step"], r["time"]))
    deltas = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(rows[1:], rows[2:], strict=False) if s1 > s0]
    return statistics.median(deltas) if deltas else None


def _cached_eval(workdir: Path, split: str, protocol: str, step: int, metric: str, latest=True) -> dict | None:
    path = workdir / "evals" / (f"{split}_{protocol.replace(':', '_')}" + ("" if latest else f"_step{step}") + ".json")
    if not path.is_file():
        return None
    try:
        from repro.results import read_row

        row = read_row(path)
    except ValueError:
        return None
    m = row.get("metrics", {})
    same = row.get("steps") == step and row.get("protocol") == protocol and row.get("split") == split
    return row if same and m.get(metric) is not None and m.get(f"{metric}_stderr") is not None else None


def _train_seconds(workdir: Path) -> dict[int, float]:
    """Training seconds at each logged step (the run's ``time`` column)."""
    out = {}
    path = workdir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "time" in r and "step" in r:
            out[r["step"]] = r["time"]
    return out


def _curve(study: Study, design: Design, r: PointRun, final: dict, evaluate) -> list[dict]:
    """The run's kept checkpoints, each evaluated under the design's protocol: the metric vs
    training FLOPs and training seconds along the way (the final checkpoint is the point itself)."""
    from repro.checkpoint import Checkpointer

    ckpt = Checkpointer(r.workdir, read_only=True)
    try:
        steps = sorted(ckpt.all_steps())
    finally:
        ckpt.close()
    seconds = _train_seconds(r.workdir)
    per_step = r.train_flops / r.exp.train.steps
    curve = []
    for step in steps:
        if step == final["steps"]:
            ev = final
        else:
            ev = _cached_eval(r.workdir, design.split, r.protocol, step, study.metric, latest=False)
            ev = ev or evaluate(r, step)
        m = ev["metrics"]
        near = min(seconds, key=lambda s: abs(s - step)) if seconds else None
        curve.append({"step": step, "train_flops": per_step * step, "train_seconds": seconds.get(near),
                      "value": m.get(study.metric), "stderr": m.get(f"{study.metric}_stderr")})  # fmt: skip
    return curve


def run_study(
    study: Study,
    scale: str,
    root: Path,
    out: Path,
    *,
    data_dir: Path | None = None,
    console=None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and evaluate every point (resuming), then write ``out/study.json``; returns it."""
    from experiments import SECTIONS
    from repro import app

    section = SECTIONS[study.section]
    design = study.design(scale)
    runs = plan(study, scale, root)
    trained: dict[Path, dict] = {}
    for i, r in enumerate(runs):
        if r.shared_with:
            continue
        log(f"study {study.name} ({scale}): point {r.point.name}, seed {r.seed} "
            f"({i + 1}/{len(runs)}) in {r.workdir}")  # fmt: skip
        trained[r.workdir] = app.run(section, r.exp, r.workdir, data_dir=data_dir, console=console,
                                     show_progress=show_progress)  # fmt: skip

    def evaluate(r: PointRun, step: int | str = "latest") -> dict:
        log(f"study {study.name}: evaluating {r.point.name} seed {r.seed} at step {step} under {r.protocol}")
        return app.evaluate_run(section, r.workdir, protocol=r.protocol, split=design.split,
                                max_examples=design.max_examples, data_dir=data_dir, show_progress=show_progress,
                                console=console, checkpoint=step)[0]  # fmt: skip

    points: list[dict] = []
    for r in runs:
        row = trained[r.workdir]
        ev = _cached_eval(r.workdir, design.split, r.protocol, row["steps"], study.metric) or evaluate(r)
        m = ev["metrics"]
        points.append({
            "point": r.point.name, "x": r.point.x, "series": r.point.series, "seed": r.seed,
            "workdir": os.path.relpath(r.workdir),  # relative: no machine's path in a record
            "shared_with": r.shared_with, "preset": r.exp.preset, "overrides": list(design.common) + list(r.point.set),
            "protocol": ev["protocol"], "split": ev["split"],
            "value": m.get(study.metric), "stderr": m.get(f"{study.metric}_stderr"),
            "nats_per_token": m.get("nats_per_token"), "nats_per_token_stderr": m.get("nats_per_token_stderr"),
            "headline": ev["headline"], "eval_tokens": m.get("eval_tokens"), "eval_documents": m.get("eval_documents"),
            "steps": row["steps"], "train_flops": r.train_flops, "wall_seconds": row.get("wall_seconds"),
            "step_seconds": _step_seconds(r.workdir), "num_params": row.get("num_params"),
            "max_context": r.exp.model.max_context, "num_latents": r.exp.model.num_latents,
            "dataset": ev["dataset"], "data_hash": ev.get("data_hash"), "git_sha": row.get("git_sha"),
            "eval_git_sha": ev.get("git_sha"), "device": ev.get("device", {}).get("kind"),
            "curriculum": row.get("curriculum_steps"), "config": row.get("config"),
            "baselines": _baselines(ev, study.metric),
            "curve": _curve(study, design, r, ev, evaluate) if design.curve_points else None,
        })  # fmt: skip
    doc = summarise(study, scale, design, points)
    doc["documents"] = _document_lengths(section, runs[0].exp, design, data_dir)
    write_study(out, doc)
    return doc


def _baselines(ev: dict, metric: str) -> dict[str, dict]:
    """The evaluation row's simple baselines (``repro/eval/baselines.py``: measured on the same
    scored targets) in the study's metric: its own key, else their value where the metric is the
    row's headline. A baseline without the metric is left out."""
    out = {}
    for name, b in (ev.get("baselines") or {}).items():
        v = b.get(metric, b.get("value") if ev.get("headline", {}).get("key") == metric else None)
        if isinstance(v, int | float) and math.isfinite(v):
            out[name] = {"value": float(v), "description": b.get("description", ""),
                         "eval_tokens": b.get("eval_tokens")}  # fmt: skip
    return out


def _baseline_summary(points: list[dict]) -> dict[str, dict]:
    """Each baseline over every (point, seed) evaluation: mean, min and max (equal where the
    points score the same targets, as a study's do)."""
    vals: dict[str, list[float]] = {}
    desc: dict[str, str] = {}
    for p in points:
        for name, b in (p.get("baselines") or {}).items():
            vals.setdefault(name, []).append(b["value"])
            desc[name] = b["description"]
    return {n: {"value": sum(v) / len(v), "min": min(v), "max": max(v), "description": desc[n]}
            for n, v in vals.items()}  # fmt: skip


def _document_lengths(section, exp, design: Design, data_dir) -> dict[str, Any] | None:
    """Token lengths of the scored documents: context cannot help past a document's length."""
    try:
        from repro import app
        from repro.eval.evaluate import eval_document_count

        src = app.source_for(section, exp, data_dir)
        if src.synthetic:
            return None
        n = src.num_documents(design.split)
        num = eval_document_count(exp, src, design.max_examples)  # what repro eval scores (0 = all)
        n = min(n, num or n, design.max_examples or n)
        lens = sorted(len(src.document(design.split, i).tokens) for i in range(n))
    except Exception:  # noqa: BLE001 - a description only; never fails a study
        return None
    return {"split": design.split, "count": len(lens), "min": lens[0], "median": lens[len(lens) // 2],
            "max": lens[-1]} if lens else None  # fmt: skip


def summarise(study: Study, scale: str, design: Design, points: list[dict]) -> dict[str, Any]:
    """study.json's content from the per-(point, seed) rows: per-point means, comparisons, verdict."""
    from repro.runinfo import git_sha, now

    by_point: dict[str, list[dict]] = {}
    for p in points:
        by_point.setdefault(p["point"], []).append(p)
    table = []
    for spec in design.points:
        rows = by_point.get(spec.name, [])
        vals = [r["value"] for r in rows]
        ses = [r["stderr"] for r in rows]
        table.append({
            "point": spec.name, "x": spec.x, "series": spec.series, "seeds": len(rows),
            "mean": _mean(vals), "stderr": _combined_se(vals, ses),
            "step_seconds": _mean([r["step_seconds"] for r in rows if r["step_seconds"] is not None]),
            "train_flops": _mean([r["train_flops"] for r in rows]), "steps": _mean([r["steps"] for r in rows]),
            "wall_seconds": _mean([r["wall_seconds"] for r in rows if r["wall_seconds"] is not None]),
            "max_context": rows[0]["max_context"] if rows else None,
            "num_latents": rows[0]["num_latents"] if rows else None,
        })  # fmt: skip
    comparisons = []
    nan = lambda v: math.nan if v is None else v  # noqa: E731 - a missing number makes a verdict inconclusive
    for c in design.comparisons:
        t_rows = {r["seed"]: r for r in by_point.get(c.treatment, [])}
        if c.reference:
            r_rows = {r["seed"]: r for r in by_point.get(c.reference, [])}
            seeds = sorted(set(t_rows) & set(r_rows))
            effects = [nan(t_rows[s]["value"]) - nan(r_rows[s]["value"]) for s in seeds]
            ses = [math.hypot(nan(t_rows[s]["stderr"]), nan(r_rows[s]["stderr"])) for s in seeds]
        else:
            seeds = sorted(t_rows)
            effects = [nan(t_rows[s]["value"]) - c.threshold for s in seeds]
            ses = [nan(t_rows[s]["stderr"]) for s in seeds]
        v = verdict(effects, ses, c.expected) if seeds else {"verdict": INCONCLUSIVE, "why": "no runs"}
        comparisons.append({**dataclasses.asdict(c), **v, "per_seed": dict(zip(map(str, seeds), effects,
                                                                                 strict=True))})  # fmt: skip
    datasets = sorted({p["dataset"]["name"] for p in points})
    return {
        "schema": STUDY_SCHEMA,
        "study": study.name,
        "claim_id": study.claim_id,
        "claim": study.claim,
        "source": study.source,
        "section": study.section,
        "scale": scale,
        "metric": study.metric,
        "metric_label": study.metric_label,
        "higher_is_better": study.higher_is_better,
        "axis": study.axis,
        "log_x": study.log_x,
        "design": _design_dict(design),
        "datasets": datasets,
        "is_paper_data": all(p["dataset"]["is_paper_data"] for p in points),
        "points": table,
        "runs": points,
        "comparisons": comparisons,
        "baselines": _baseline_summary(points),
        "verdict": overall([c["verdict"] for c in comparisons]),
        "proper_test": study.proper_test,
        "note": design.note,
        "git_sha": git_sha(),
        "git_shas_of_runs": sorted({p["git_sha"] for p in points if p.get("git_sha")}),
        "device": sorted({p["device"] for p in points if p.get("device")}),
        "date": now(),
    }


def _design_dict(design: Design) -> dict[str, Any]:
    d = dataclasses.asdict(design)
    d["points"] = [dataclasses.asdict(p) for p in design.points]
    d["comparisons"] = [dataclasses.asdict(c) for c in design.comparisons]
    return d


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _combined_se(vals: list, ses: list) -> float | None:
    """A point's standard error over seeds: evaluation error and seed spread, as in verdict()."""
    if not vals or any(v is None for v in vals) or any(s is None for s in ses):
        return None
    S = len(vals)
    var = sum(s * s for s in ses) / S / S + (statistics.variance(vals) / S if S > 1 else 0.0)
    return math.sqrt(var)


def write_study(out: Path, doc: dict[str, Any]) -> Path:
    from repro.runinfo import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "study.json", doc)
    plot_study(doc, out / "study.png")
    return out / "study.json"


def read_study(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable study file ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != STUDY_SCHEMA:
        raise ValueError(f"{path}: not a study file of schema {STUDY_SCHEMA}")
    return doc


# ---------------------------------------------------------------------------------- the plot


def flops_budget(doc: dict[str, Any]) -> str:
    """The point whose training FLOPs every point of the study was matched to ("" = none): such
    points differ in the model, not along a number line, so their axis values only order them."""
    return (doc.get("design") or {}).get("flops_budget") or ""


def plot_study(doc: dict[str, Any], path: Path) -> Path:
    """The metric (± 2 standard errors) vs the axis per series, and step time / compute beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = doc["points"]
    curves = [r for r in doc.get("runs", []) if r.get("curve")]
    fig, axes = plt.subplots(1, 4 if curves else 2, figsize=(18 if curves else 10, 3.8))
    series = list(dict.fromkeys(p["series"] for p in pts))
    runs = doc.get("runs", [])
    one_run = len(pts) > 1 and bool(runs) and all(r.get("shared_with") for r in runs[1:])
    for s in series:
        ps = [p for p in pts if p["series"] == s and p["mean"] is not None]
        xs = [p["x"] for p in ps]
        axes[0].errorbar(xs, [p["mean"] for p in ps], yerr=[2 * (p["stderr"] or 0) for p in ps], marker="o",
                         capsize=3, label=s)  # fmt: skip
        right = [(p["x"], p["step_seconds"]) for p in ps if p["step_seconds"]]
        if right and not one_run:
            axes[1].plot(*zip(*right, strict=True), marker="o", label=s)
    if one_run:  # the points differ in evaluation only: a step-time line would be one run drawn N times
        axes[1].text(0.5, 0.5, "every point evaluates the same trained run:\nno step time varies along this axis",
                     ha="center", va="center", transform=axes[1].transAxes, fontsize=9)  # fmt: skip
    _baseline_lines(axes[0], doc)
    for r in curves:  # the metric along the way: vs training FLOPs and vs training seconds
        c = [p for p in r["curve"] if p["value"] is not None]
        lab = f"{r['series']} (seed {r['seed']})"
        axes[2].plot([p["train_flops"] for p in c], [p["value"] for p in c], marker="o", label=lab)
        w = [p for p in c if p["train_seconds"] is not None]
        axes[3].plot([p["train_seconds"] for p in w], [p["value"] for p in w], marker="o", label=lab)
    for ax, what in zip(axes[2:], ("training FLOPs", "training seconds"), strict=False):
        ax.set_xlabel(what)
        ax.set_ylabel(doc["metric_label"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    xs = sorted({p["x"] for p in pts})
    matched = bool(flops_budget(doc))  # the ticks name the points (``flops_budget``)
    names = {p["x"]: p["point"].replace("-", "\n", 1) for p in pts}
    for ax in axes[:2]:
        ax.set_xlabel(f"{doc['axis']}: the same for every point" if matched else doc["axis"])
        if doc.get("log_x") and not matched:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [names[x] if matched else f"{x:g}" for x in xs])
        if matched:
            ax.set_xlim(xs[0] - 0.5, xs[-1] + 0.5)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(doc["metric_label"] + " (± 2 s.e.)")
    axes[0].set_title(f"{doc['study']}: {doc['verdict']}", fontsize=10)
    axes[1].set_ylabel("" if one_run else "seconds per training step")
    if one_run:
        axes[1].set_yticks([])
    axes[1].set_title(f"step time ({doc['scale']} scale)", fontsize=10)
    fig.suptitle("; ".join(doc["datasets"]), fontsize=8, y=0.02, va="bottom")
    if len(series) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _baseline_lines(ax, doc: dict[str, Any]) -> None:
    """Baselines as dashed lines where they lie near the points (within the points' own span,
    error bars included, on either side): a far one (a unigram at twice the loss) would flatten
    the differences the plot is for; the report's table lists them all."""
    ends = [p["mean"] + k * 2 * (p["stderr"] or 0) for p in doc["points"] if p["mean"] is not None for k in (-1, 1)]
    if not ends:
        return
    lo, hi = min(ends), max(ends)
    span = max(hi - lo, 1e-12)
    for name, b in (doc.get("baselines") or {}).items():
        if lo - span <= b["value"] <= hi + span:
            ax.axhline(b["value"], ls="--", lw=1, color="gray")
            ax.annotate(f"{name} baseline", (0.01, b["value"]), xycoords=("axes fraction", "data"), fontsize=7,
                        color="gray", va="bottom")  # fmt: skip
