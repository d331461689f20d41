"""``repro report``: the paper's numbers and ours, side by side (reads only the one results schema).

It collects every result row (``results.json`` of a training run, ``evals/*.json`` of ``repro
eval``; ``repro/results.py``) under the given directories, and writes

    report.md / report.csv   per section: the paper's table (every number the section compares
                             with, ``Section.paper_numbers``, with its source tag) with our rows
                             inserted; each of our rows names its scale and dataset and whether it
                             is a reproduction (paper preset on the paper's data) — a demo-corpus
                             or scaled-down row is labelled so and is never called one; Δ vs the
                             paper where the preset has a paper value for that metric and split;
                             below each section's table, the documents each row scored;
    plots/*.png              training / evaluation curves per run (from ``metrics.jsonl``; named
                             ``curves_<section>_<preset>_<run>.png`` by the run's directory, so two
                             runs of one preset never share a file), the held-out headline vs
                             context (sections whose ``context_plot`` is on), the step-time
                             benchmark (Perceiver AR vs Transformer, from ``bench/training.json``);
    <section figures>        each section's own figures (``Section.figures``, e.g. the copy task's
                             accuracy vs sequence length, ``copy/length_scaling.png``), each under
                             its heading;

and links the sections' sample images and the deviations log.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from repro.data.source import dataset_label
from repro.results import ResultsError, read_row


def collect(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, row) of every result file of this schema under ``paths`` (files or directories)."""
    found: list[tuple[Path, dict[str, Any]]] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_file():
            files = [p]
        elif p.is_dir():
            files = sorted(set(p.rglob("results.json")) | set(p.rglob("evals/*.json")))
        else:
            raise FileNotFoundError(f"{p} does not exist")
        for f in files:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            try:
                found.append((f, read_row(f)))
            except ResultsError:
                continue  # not a result of this schema (e.g. a benchmark record)
    return found


def _label(row: dict[str, Any]) -> str:
    if row["reproduction"]:
        return "reproduction (paper preset, paper data)"
    why = []
    if row["scale"] != "paper":
        why.append(f"{row['scale']} scale")
    if not row["dataset"]["is_paper_data"]:
        why.append("not the paper's data")
    return "not a reproduction: " + ", ".join(why)


def checkpoint_note(row: dict[str, Any]) -> str:
    """The note " (best checkpoint)" or " (kept checkpoint)" for a row that scored a checkpoint
    other than the run's latest (``repro eval --checkpoint best|STEP``: its ``steps`` is the scored step), else ""."""
    selector = row.get("checkpoint")
    if selector in (None, "latest"):
        return ""
    return " (best checkpoint)" if selector == "best" else " (kept checkpoint)"


def is_perceiver(row: dict[str, Any]) -> bool:
    """A Perceiver AR run (fewer latents than inputs), not its Transformer baseline (M = N)."""
    m = row["config"]["model"]
    return m["num_latents"] < m["max_context"]


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and v != v):  # None, or NaN from pandas
        return "– (no number published)"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def rows_table(sections: dict, found: list[tuple[Path, dict[str, Any]]]):
    """One pandas DataFrame: the paper's numbers and our rows, per section (the CSV)."""
    import pandas as pd

    recs = []
    for name, sec in sections.items():
        for p in sec.paper_numbers:
            recs.append({
                "section": name, "source": "paper", "table": p.table, "model": p.model, "metric": p.metric,
                "unit": p.unit, "split": p.split, "value": p.value, "stderr": None, "delta_vs_paper": None,
                "scale": "paper", "dataset": "the paper's", "preset": p.preset, "tag": p.source, "label": p.note,
                "steps": None, "path": "",
            })  # fmt: skip
    for path, r in found:
        sec = sections.get(r["section"])
        h = r["headline"]
        paper = None
        if sec is not None:
            for p in sec.paper_numbers:
                if p.preset == r["preset"] and p.metric == h["key"] and p.split == r["split"] and p.value is not None:
                    paper = p.value
                    break
        value = h["value"]
        recs.append({
            "section": r["section"], "source": "ours", "table": "",
            "model": "Perceiver AR" if is_perceiver(r) else "Transformer (M = N)",
            "metric": h["key"], "unit": h["unit"], "split": r["split"], "value": value, "stderr": h["stderr"],
            "delta_vs_paper": (value - paper) if (paper is not None and value is not None) else None,
            "scale": r["scale"], "dataset": dataset_label(r["dataset"]["name"], r["dataset"]["variant"]),
            "preset": r["preset"], "tag": f"{r['kind']}, {r['protocol']}{checkpoint_note(r)}, git {r['git_sha'][:10]}",
            "label": _label(r), "steps": r["steps"], "path": str(path),
        })  # fmt: skip
        for bname, b in r.get("baselines", {}).items():
            recs.append({
                "section": r["section"], "source": "ours (baseline, same run)", "table": "", "model": bname,
                "metric": h["key"], "unit": h["unit"], "split": r["split"], "value": b["value"], "stderr": None,
                "delta_vs_paper": None, "scale": r["scale"], "dataset": f"{r['dataset']['name']}",
                "preset": r["preset"], "tag": b.get("description", ""), "label": "baseline", "steps": None,
                "path": str(path),
            })  # fmt: skip
    return pd.DataFrame.from_records(recs)


def run_names(found: list[tuple[Path, dict[str, Any]]]) -> dict[Path, str]:
    """A short name per run directory (of a ``results.json``), unique among ``found``: its folder
    name, with as many parent folders as it takes to tell runs apart (``pg19_cpu``, ``a_run`` /
    ``b_run``), then a counter."""
    dirs = sorted({p.parent.resolve() for p, _ in found if p.name == "results.json"})
    names: dict[Path, str] = {}
    depth = 1
    pending = list(dirs)
    while pending:
        cand = {d: "_".join(d.parts[-depth:]).strip("/") for d in pending}
        counts: dict[str, int] = {}
        for n in cand.values():
            counts[n] = counts.get(n, 0) + 1
        still = []
        for d in pending:
            if counts[cand[d]] == 1 or depth >= len(d.parts):
                names[d] = cand[d]
            else:
                still.append(d)
        pending, depth = still, depth + 1
    seen: dict[str, int] = {}
    for d in dirs:  # identical paths cannot occur; a counter keeps the rule total anyway
        n = "".join(c if c.isalnum() or c in "-_." else "_" for c in names[d]) or "run"
        seen[n] = seen.get(n, 0) + 1
        names[d] = n if seen[n] == 1 else f"{n}_{seen[n]}"
    return names


def _curves(path: Path, row: dict[str, Any], out: Path, run: str = "") -> Path | None:
    """Training loss and the headline metric of each evaluation vs step, from ``metrics.jsonl``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from repro.train.runlog import read_metrics

    log = path.parent / "metrics.jsonl"
    if path.name != "results.json" or not log.is_file():
        return None
    rows = read_metrics(log)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    key = "eval/" + row["headline"]["key"]
    ev = [(r["step"], r[key]) for r in rows if key in r]
    if not train:
        return None
    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    a, b = fig.subplots(1, 2)
    a.plot(*zip(*train, strict=True), lw=1)
    a.set(xlabel="step", ylabel="training loss (nats/target + z-loss)", title=f"{row['section']}/{row['preset']}")
    if ev:
        b.plot(*zip(*ev, strict=True), "o-", ms=3)
    for name, base in row.get("baselines", {}).items():
        b.axhline(base["value"], ls="--", lw=1, color="gray")
        b.annotate(name, (0, base["value"]), xycoords=("axes fraction", "data"), fontsize=8, color="gray")
    b.set(xlabel="step", ylabel=f"eval {row['headline']['label']} ({row['headline']['unit']})")
    b.set_title(row["dataset"]["name"], fontsize=8)
    if row["headline"]["unit"] == "perplexity":
        b.set_yscale("log")  # model and unigram differ by orders of magnitude
    fig.tight_layout()
    stem = f"curves_{row['section']}_{row['preset']}"
    if run and run not in (row["preset"], f"{row['section']}_{row['preset']}"):  # the name tells nothing new
        stem += f"_{run}"
    dst = out / "plots" / f"{stem}.png"
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)
    return dst


def _context_plots(sections: dict, found, out: Path) -> dict[str, Path]:
    """Held-out headline metric vs context length, per section and dataset, where recorded runs
    exist at two or more contexts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plots = {}
    for name, sec in sections.items():
        if not sec.context_plot:  # e.g. copy: its lengths differ by task, not by context
            continue
        groups: dict[str, list[tuple[int, float]]] = {}
        for _, r in found:
            if r["section"] == name and r["kind"] == "train" and r["headline"]["value"] is not None:
                groups.setdefault(r["dataset"]["name"], []).append(
                    (r["config"]["model"]["max_context"], r["headline"]["value"])
                )
        for ds, pts in groups.items():
            if len({c for c, _ in pts}) < 2:
                continue
            pts.sort()
            fig = Figure(figsize=(5, 3.4))
            FigureCanvasAgg(fig)
            ax = fig.subplots()
            ax.semilogx([c for c, _ in pts], [v for _, v in pts], "o-", base=2)
            ax.set(xlabel="context (inputs)", ylabel=f"{sec.headline.label} ({sec.headline.unit})")
            ax.set_title(f"{name}: {ds}", fontsize=8)
            fig.tight_layout()
            dst = out / "plots" / f"context_{name}_{len(plots)}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(dst, dpi=110)
            plots[f"context_{name}_{len(plots)}"] = dst
    return plots


def _bench(paths: list[Path], out: Path) -> tuple[Path | None, dict | None]:
    for p in paths:
        f = Path(p) / "bench" / "training.json"
        if f.is_file():
            rec = json.loads(f.read_text())
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(5, 3.4))
            FigureCanvasAgg(fig)
            ax = fig.subplots()
            for model in ("perceiver_ar", "transformer"):
                pts = [(r["context"], r["step_seconds"]) for r in rec["rows"]
                       if r.get("model") == model and r.get("step_seconds")]  # fmt: skip
                if pts:
                    ax.loglog(*zip(*pts, strict=True), "o-", label=model, base=2)
            ax.set(xlabel="context N", ylabel="train step (s)", title="step time (results/bench/training.json)")
            ax.legend()
            fig.tight_layout()
            dst = out / "plots" / "step_time_vs_context.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(dst, dpi=110)
            return dst, rec
    return None, None


def collect_studies(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, study) of every ``study.json`` under ``paths`` (repro/study.py), by claim then name."""
    from repro.study import read_study

    found, seen = [], set()
    for p in paths:
        p = Path(p)
        for f in sorted([p] if p.is_file() and p.name == "study.json" else p.rglob("study.json") if p.is_dir() else []):
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            try:
                found.append((f, read_study(f)))
            except ValueError:
                continue
    latest = {(d["study"], d["scale"]): (f, d) for f, d in found}  # one per study and scale: the last path's
    return sorted(latest.values(), key=lambda x: (x[1]["claim_id"], x[1]["study"], x[1]["scale"]))


def _num(v: Any, spec: str = ".4f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def claims_section(paths: list[Path], out: Path) -> tuple[list[str], dict[str, Path]]:
    """The report's first section: per claim, the paper's statement and source, our plot and
    table (value ± stderr per point), each comparison's effect and verdict, and the labels."""
    from repro.flops import human
    from repro.study import flops_budget, plot_study

    studies = collect_studies(paths)
    md = ["\n## Claims: do the paper's claims hold at our scale?\n\n"]
    if not studies:
        md.append("No recorded study yet (`repro study list`, `repro study run NAME`).\n")
        return md, {}
    md.append(
        "Each claim is tested by a study (`experiments/studies.py`): runs that differ along one axis, everything "
        "else equal (data, steps, batch, seeds, evaluation protocol; equal training FLOPs where the claim is about "
        "compute). The verdict comes from one rule fixed before the runs (`repro/study.py`): **holds at this "
        "scale** where the effect has the paper's sign and exceeds 2 standard errors (evaluation error combined "
        "with the spread over seeds), **does not show** where the opposite sign does, **inconclusive** otherwise "
        "or where seeds disagree in sign. These are small models on demo corpora: a verdict is about this scale, "
        "not the paper's. Step times (s/step) are each run's median from its own log, on the machine as it was "
        "while it trained (other jobs may have shared its cores): read them within a study with care."
        "\n\n| claim | study | scale, data | verdict |\n|---|---|---|---|\n"
    )
    for _, d in studies:
        md.append(f"| {d['claim_id']} | [{d['study']}](#study-{d['study']}-{d['scale']}) | {d['scale']}, "
                  f"{'; '.join(d['datasets'])} | **{d['verdict']}** |\n")  # fmt: skip
    plots = {}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for p, d in studies:
        key = f"study_{d['study']}_{d['scale']}"
        png = plots[key] = plot_study(d, out / "plots" / f"{key}.png")  # from study.json alone
        rel = os.path.relpath(png, out)
        md.append(f'\n### <a id="study-{d["study"]}-{d["scale"]}"></a>{d["study"]} ({d["scale"]} scale)\n\n')
        md.append(f"**Claim** ({d['claim_id']}): {d['claim']}  \n**Source**: {d['source']}  \n"
                  f"**Data**: {'; '.join(d['datasets'])}"
                  + ("" if d["is_paper_data"] else " (**not the paper's data**)")
                  + f"; {d['scale']} scale; git {', '.join(s[:10] for s in d['git_shas_of_runs'])}; "
                  f"device {', '.join(d['device'])}; study file [`{os.path.relpath(p, out)}`]"
                  f"({os.path.relpath(p, out)})\n\n")  # fmt: skip
        md.append(f"![{d['study']}]({rel})\n\n")
        des = d["design"]
        own = [pt.get("protocol") for pt in des["points"] if pt.get("protocol")]
        under = (
            f"`{des['protocol']}`"
            if des["protocol"]
            else f"each point's own protocol ({', '.join(f'`{x}`' for x in own)})"
            if own
            else "the section default"
        )
        seeds = ", ".join(map(str, des["seeds"]))
        matched = flops_budget(d)  # a "model" column: the axis value only orders such points
        budget = f" Every point is trained to the training FLOPs of {matched}." if matched else ""
        md.append(f"{d['metric_label']} under {under} on {des['split']}; seeds {seeds}.{budget}\n\n")
        md.append(f"| point | {'model' if matched else d['axis']} | seeds | {d['metric_label']} ± s.e. | steps "
                  "| training FLOPs | s/step |\n|---|---|---|---|---|---|---|\n")  # fmt: skip
        for pt in d["points"]:
            x = pt["series"] if matched else f"{pt['x']:g}"
            md.append(f"| {pt['point']} | {x} | {pt['seeds']} | {_num(pt['mean'])} ± {_num(pt['stderr'])} "
                      f"| {_num(pt['steps'], ',.0f')} | {human(pt['train_flops'] or 0)} "
                      f"| {_num(pt['step_seconds'], '.3f')} |\n")  # fmt: skip
        base = d.get("baselines") or {}
        if base:
            md.append("\nSimple baselines on the same scored targets (measured in each point's evaluation): "
                      + "; ".join(f"{n} {_num(b['value'])}" + (f" ({_num(b['min'])} to {_num(b['max'])})"
                                  if b["max"] - b["min"] > 1e-9 else "") + f" ({b['description']})"
                                  for n, b in base.items()) + ".\n")  # fmt: skip
        md.append("\n| comparison | effect ± s.e. | per seed | verdict |\n|---|---|---|---|\n")
        for c in d["comparisons"]:
            what = c["what"] or (f"{c['treatment']} - {c['reference']}" if c["reference"] else
                                 f"{c['treatment']} - {c['threshold']}")  # fmt: skip
            sign = "lower" if c["expected"] < 0 else "higher"
            per = ", ".join(f"{k}: {v:+.4f}" for k, v in c.get("per_seed", {}).items())
            md.append(f"| {what} (claim: {sign}) | {_num(c.get('effect'), '+.4f')} ± {_num(c.get('stderr'))} "
                      f"| {per or '–'} | **{c['verdict']}** ({c['why']}) |\n")  # fmt: skip
        docs = d.get("documents")
        if docs:
            md.append(f"\nScored documents ({docs['split']}): {docs['count']}, {docs['min']:,} to {docs['max']:,} "
                      f"tokens (median {docs['median']:,}).")  # fmt: skip
            longest = max((pt["max_context"] or 0) for pt in d["points"])
            if longest > docs["median"]:
                md.append(
                    f" **Most documents are shorter than the longest context ({longest:,})**: context "
                    "cannot help past a document's end."
                )
            md.append("\n")
        if d.get("note"):
            md.append(f"\n{d['note']}\n")
        if d.get("proper_test"):
            md.append(f"\n*What a proper test needs*: {d['proper_test']}\n")
    return md, plots


def _documents_line(rows: list[tuple[Path, dict[str, Any]]]) -> str:
    """The documents each row of the table scored (``metrics.eval_documents``), in its order: a
    line of its own below the table, which keeps its columns; "" when no row records them."""

    def what(r: dict[str, Any]) -> str:  # the step too where the row scored a kept checkpoint, not the latest
        return f"{r['kind']}, {r['protocol']}" + (f", step {r['steps']:,}" if checkpoint_note(r) else "")

    scored = [f"{r['preset']} ({what(r)}) {r['metrics']['eval_documents']:,}"
              for _, r in rows if r.get("metrics", {}).get("eval_documents") is not None]  # fmt: skip
    return f"\nDocuments scored: {'; '.join(scored)}.\n" if scored else ""


def write_report(sections: dict, paths: list[Path], out: Path, deviations: Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv and plots/ under ``out``; returns their paths."""
    from repro.runinfo import write_text_atomic

    out = Path(out)
    found = collect(paths)
    df = rows_table(sections, found)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.csv", df.to_csv(index=False))

    def rel(p: Path | str) -> str:
        return os.path.relpath(Path(p), out)

    md = [
        "# Perceiver AR: the paper's numbers and ours\n\n",
        "Written by `repro report` from the result files under "
        + ", ".join(f"`{p}`" for p in paths)
        + ". Every row of ours names its scale and dataset. **Only a paper-scale preset trained on the "
        "paper's data is a reproduction**; every other row (a cpu preset, a demo corpus) shows that the "
        "code learns and how it compares with simple baselines measured in the same run, not the paper's "
        "number. Paper values carry the source tags of `docs/paper_numbers.md` ([P-code] official code, "
        "[P-quote]/[P-page] the paper, [S-paper] another paper, [S-agg] an aggregator, [S-AI] a lead only).\n",
    ]
    plots: dict[str, Path] = {}
    claims_md, claim_plots = claims_section(paths, out)
    md.extend(claims_md)
    plots.update(claim_plots)
    runs = run_names(found)
    for name, sec in sections.items():
        ours = [(p, r) for p, r in found if r["section"] == name]
        if not sec.paper_numbers and not ours:
            continue
        md.append(f"\n## {sec.title or name}\n\n")
        paper = df[(df.section == name) & (df.source == "paper")]
        if len(paper):
            head = sec.headline.label if sec.headline.label == sec.headline.unit else (
                f"{sec.headline.label} ({sec.headline.unit})")  # fmt: skip
            md.append(f"| model | split | {head} | source | note |\n")
            md.append("|---|---|---|---|---|\n")
            for _, r in paper.iterrows():
                md.append(f"| {r.model} | {r.split} | {_fmt(r.value)} | {r.tag} | {r.label or ''} |\n")
        if ours:
            md.append(f"\n**Our runs** ({sec.headline.label}, {sec.headline.unit}; "
                      f"{'higher' if sec.headline.higher_is_better else 'lower'} is better):\n\n")  # fmt: skip
            md.append("| preset | model | split | protocol | value ± stderr | Δ vs paper | baselines (same run) "
                      "| steps | dataset | what it is |\n|---|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip
            ordered = sorted(ours, key=lambda x: (x[1]["preset"], x[1]["kind"], x[1]["split"]))
            for p, r in ordered:
                h = r["headline"]
                sub = df[(df.path == str(p)) & (df.source == "ours")].iloc[0]
                base = "; ".join(f"{k} {sec.headline.format(b['value'])}" for k, b in r.get("baselines", {}).items())
                val = sec.headline.format(h["value"]) + (
                    f" ± {sec.headline.format(h['stderr'])}" if h["stderr"] else ""
                )
                delta = "–" if sub.delta_vs_paper is None or sub.delta_vs_paper != sub.delta_vs_paper else (
                    f"{sub.delta_vs_paper:+.3f}")  # fmt: skip
                md.append(f"| [{r['preset']}]({rel(p)}) ({r['kind']}) | {sub.model} | {r['split']} | {r['protocol']} "
                          f"| {val} | {delta} | {base or '–'} | {r['steps']:,}{checkpoint_note(r)} | {sub.dataset} "
                          f"| {_label(r)} |\n")  # fmt: skip
            md.append(_documents_line(ordered))
            for p, r in ours:
                c = _curves(p, r, out, runs.get(p.parent.resolve(), ""))
                if c:
                    plots[c.stem] = c
                    md.append(f"\n![{name}/{r['preset']} curves]({rel(c)})\n")
                samples = sorted((p.parent / "samples").glob("*.png"))[:2] if p.name == "results.json" else []
                for s in samples:
                    md.append(f"\n![{name}/{r['preset']} sample {s.name}]({rel(s)})\n")
        else:
            md.append("\nNo recorded run of ours yet.\n")
    for name, sec in sections.items():  # each section's own figures (Section.figures), under their headings
        for heading, png in sec.figures([(p, r) for p, r in found if r["section"] == name], out).items():
            plots[f"{name}_{png.stem}"] = png
            md.append(f"\n## {heading}\n\n![{name} {png.stem.replace('_', ' ')}]({rel(png)})\n")
    for key, c in _context_plots(sections, found, out).items():
        plots[key] = c
        md.append(f"\n## Held-out metric vs context length\n\n![{key}]({rel(c)})\n")
    b, rec = _bench(paths, out)
    if b:
        plots["step_time"] = b
        md.append(f"\n## Step time: Perceiver AR vs Transformer\n\nFrom `bench/training.json` (git "
                  f"{rec['git_sha'][:10]}, {rec['date']}).\n\n![step time]({rel(b)})\n")  # fmt: skip
    if deviations is not None and Path(deviations).is_file():
        md.append(
            f"\n## Deviations from the paper and the official code\n\nSee [{rel(deviations)}]({rel(deviations)}).\n"
        )
    write_text_atomic(out / "report.md", "".join(md))
    return {"md": out / "report.md", "csv": out / "report.csv", **plots}
