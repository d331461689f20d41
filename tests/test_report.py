"""`repro report`: the tables' contents (rows, Δ vs paper, scale and dataset labels), from rows of
the one results schema."""

import json

from experiments import SECTIONS
from repro.data.source import DatasetInfo
from repro.report import collect, rows_table, write_report
from repro.results import make_row, write_row

IM = SECTIONS["imagenet64"]


def _row(preset: str, value: float, dataset: DatasetInfo, split="validation", kind="train", steps=100, extra=None):
    exp = IM.presets[preset]
    metrics = {
        "bits_per_dim": value,
        "bits_per_dim_stderr": 0.01,
        "nats_per_token": value * 0.693,
        "protocol": "blocked:512",
        "eval_documents": 50,
    }
    base = {"unigram": {"value": 8.5, "description": "histogram"}}
    return make_row(kind=kind, exp=exp, section=IM, dataset=dataset, split=split, metrics=metrics, steps=steps,
                    num_params=1, baselines=base, extra=extra)  # fmt: skip


def test_report_tables(tmp_path):
    real = DatasetInfo("ImageNet 64x64 (van den Oord et al. 2016) (png)", "png", True, "abc")
    demo = DatasetInfo(IM.demo_name, "png", False, "def")
    write_row(tmp_path / "runs" / "paper" / "results.json", _row("paper", 3.50, real))
    write_row(tmp_path / "runs" / "cpu" / "results.json", _row("cpu", 4.25, demo))
    (tmp_path / "runs" / "cpu" / "metrics.jsonl").write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [{"step": 10, "loss": 5.0}, {"step": 20, "loss": 4.0}, {"step": 20, "eval/bits_per_dim": 4.25}]
        )  # fmt: skip
    )
    # repro eval --checkpoint best: the row of an earlier kept step, named as such beside the latest.
    write_row(tmp_path / "runs" / "cpu" / "evals" / "validation_blocked_512_step40.json",
              _row("cpu", 4.0, demo, kind="eval", steps=40, extra={"checkpoint": "best"}))  # fmt: skip
    (tmp_path / "runs" / "junk.json").write_text("{}")  # not a result: ignored
    found = collect([tmp_path / "runs"])
    assert len(found) == 3
    df = rows_table({"imagenet64": IM}, found)
    ours = df[(df.source == "ours") & (df.steps != 40)].set_index("preset")
    best = df[(df.source == "ours") & (df.steps == 40)].iloc[0]
    assert best.tag.startswith("eval, blocked:512 (best checkpoint), git ") and best.value == 4.0
    assert abs(ours.loc["paper", "delta_vs_paper"] - 0.10) < 1e-9
    assert (
        ours.loc["cpu", "delta_vs_paper"] is None
        or ours.loc["cpu", "delta_vs_paper"] != ours.loc["cpu", "delta_vs_paper"]
    )
    assert ours.loc["paper", "label"] == "reproduction (paper preset, paper data)"
    assert ours.loc["cpu", "label"] == "not a reproduction: cpu scale, not the paper's data"
    paper = df[df.source == "paper"]
    assert set(paper.model) == {"Perceiver AR", "Sparse Transformer", "Routing Transformer", "Combiner",
                                "Gated PixelCNN", "PixelRNN"}  # fmt: skip
    assert (df[df.source.str.startswith("ours (baseline")].value == 8.5).all()
    files = write_report({"imagenet64": IM}, [tmp_path / "runs"], tmp_path / "out")
    md = files["md"].read_text()
    assert "| Sparse Transformer | validation | 3.44 |" in md
    assert "+0.100" in md and "3.5000 ± 0.0100" in md
    assert "not a reproduction: cpu scale, not the paper's data" in md and IM.demo_name in md
    assert "unigram 8.5000" in md
    # The documents each row scored: a line below the table (whose columns stay as they were).
    assert "| 4.0000 ± 0.0100 | – | unigram 8.5000 | 40 (best checkpoint) |" in md
    assert "| 3.5000 ± 0.0100 | +0.100 | unigram 8.5000 | 100 |" in md  # the latest: no note
    assert (
        "\n\nDocuments scored: cpu (eval, blocked:512, step 40) 50; cpu (train, blocked:512) 50; "
        "paper (train, blocked:512) 50.\n"
    ) in md
    assert files["curves_imagenet64_cpu"].is_file()  # from metrics.jsonl, its run (runs/cpu) adds nothing to the name
    assert (tmp_path / "out" / "report.csv").read_text().count("\n") == len(df) + 1
    assert not any(k.startswith("context_") for k in files)  # one context only: no context plot


def test_report_plots_metric_vs_context_when_runs_differ_in_context(tmp_path):
    import dataclasses

    demo = DatasetInfo(IM.demo_name, "png", False, "def")
    for i, ctx in enumerate((385, 769)):
        exp = IM.presets["cpu"]
        exp = dataclasses.replace(exp, preset=f"cpu{i}", model=dataclasses.replace(exp.model, max_context=ctx))
        row = make_row(kind="train", exp=exp, section=IM, dataset=demo, split="validation", steps=1, num_params=1,
                       metrics={"bits_per_dim": 6.0 - i, "protocol": "blocked:128"})  # fmt: skip
        write_row(tmp_path / "runs" / str(i) / "results.json", row)
    files = write_report({"imagenet64": IM}, [tmp_path / "runs"], tmp_path / "out")
    assert [k for k in files if k.startswith("context_")] == ["context_imagenet64_0"]
    assert "Held-out metric vs context length" in files["md"].read_text()


def test_section_figures_come_from_the_section_hook(tmp_path):
    """The copy task's length-scaling figure is its section's ``figures`` (no shared code names
    copy): written under the report's folder, shown under its heading, and no context plot for
    copy although its runs differ in context (their lengths differ by task)."""
    import dataclasses

    copy = SECTIONS["copy"]
    synthetic = DatasetInfo("copy (synthetic mirrored sequences)", "random_mirrored_32", True)
    for i, n in enumerate((32, 64)):
        exp = copy.presets["smoke"]
        exp = dataclasses.replace(exp, preset=f"len{n}", model=dataclasses.replace(exp.model, max_context=n),
                                  data=dataclasses.replace(exp.data, seq_len=n))  # fmt: skip
        row = make_row(kind="train", exp=exp, section=copy, dataset=synthetic, split="validation", steps=10 * (i + 1),
                       num_params=1, metrics={"scored_token_accuracy": 0.5 + i / 4, "protocol": "blocked:16"},
                       wall_seconds=60.0)  # fmt: skip
        write_row(tmp_path / "runs" / str(n) / "results.json", row)
    files = write_report({"copy": copy}, [tmp_path / "runs"], tmp_path / "out")
    md = files["md"].read_text()
    assert (tmp_path / "out" / "copy" / "length_scaling.png").is_file()
    assert ("\n## Copy task: accuracy, steps and wall time vs sequence length\n\n"
            "![copy length scaling](copy/length_scaling.png)\n") in md  # fmt: skip
    assert "Held-out metric vs context length" not in md and not any(k.startswith("context_") for k in files)
    assert copy.figures([], tmp_path / "none") == {} and IM.figures([], tmp_path / "none") == {}
