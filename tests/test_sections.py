"""The section interface: every section's presets round-trip through config.json, and a section
defined inside the test suite (tests/toy_section.py) trains, evaluates under both protocols,
samples and writes one-schema results through the same code as the CLI, touching no shared file."""

import dataclasses
import json
import math

import numpy as np
import pytest
import toy_section as toy

from experiments import SECTIONS
from repro import app
from repro.config import experiment_from_dict, experiment_to_dict
from repro.data.pipeline import Prefetcher
from repro.results import SCHEMA_VERSION, read_row
from repro.section import Section


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_preset_of_every_section_loads_back_equal(name):
    sec = SECTIONS[name]
    assert isinstance(sec, Section) and sec.name == name and sec.default_preset in sec.presets
    for preset, exp in sec.presets.items():
        back = experiment_from_dict(json.loads(json.dumps(experiment_to_dict(exp))))
        assert back == exp and type(back.data) is sec.data_config, preset


def test_sections_are_discovered_and_typed():
    assert "copy" in SECTIONS
    for sec in SECTIONS.values():
        assert sec.headline.key and sec.headline.unit
        for p in sec.paper_numbers:
            assert p.preset == "" or p.preset in sec.presets


def test_facts_stated_once_agree():
    """bits/dim is reported exactly for a bits_per_dim headline, and a corpus section's raw format
    names the section (its manifests' "section"); a format of another section is refused."""
    for sec in [*SECTIONS.values(), toy.SECTION]:
        exp = sec.presets[sec.default_preset]
        assert sec.bits_per_dim(exp) == (sec.headline.key == "bits_per_dim"), sec.name
        if sec.raw_format is not None:
            assert sec.raw_format.section == sec.name
    assert SECTIONS["imagenet64"].bits_per_dim(SECTIONS["imagenet64"].presets["smoke"])

    class Misnamed(toy.ToySection):
        raw_format = SECTIONS["pg19"].raw_format

    with pytest.raises(ValueError, match="its raw_format PG19Format is for section 'pg19'"):
        Misnamed(toy.SECTION.presets, toy.SECTION.default_preset)


def test_headline_formats():
    copy = SECTIONS["copy"].headline
    assert copy.format(0.5) == "50.0000%"
    bpd = dataclasses.replace(copy, key="bits_per_dim", fmt=".3f", unit="bits/dim")
    assert bpd.format(3.4) == "3.400" and bpd.format(math.inf) == "inf" and bpd.format(None) == "n/a"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    data_dir, wd = root / "data", root / "run"
    row = app.run(toy.SECTION, toy.SMOKE, wd, data_dir=data_dir, show_progress=False)
    return row, wd, data_dir


def test_toy_section_trains_on_its_demo_corpus_and_writes_one_schema(toy_run):
    row, wd, data_dir = toy_run
    assert (data_dir / "toy" / "demo" / "manifest.json").is_file()  # built on first use
    assert (data_dir / "toy" / "demo-raw" / "train").is_dir()
    on_disk = read_row(wd / "results.json")
    assert on_disk == json.loads(json.dumps(row, default=str))
    assert on_disk["schema_version"] == SCHEMA_VERSION and on_disk["kind"] == "train"
    assert on_disk["dataset"]["name"] == "demo: toy words" and not on_disk["dataset"]["is_paper_data"]
    assert on_disk["reproduction"] is False and on_disk["scale"] == "smoke"
    assert on_disk["headline"]["key"] == "word_perplexity" and on_disk["headline"]["unit"] == "perplexity"
    assert on_disk["headline"]["value"] == on_disk["metrics"]["word_perplexity"] > 1
    assert on_disk["baselines"]["uniform"]["value"] == 256.0
    assert on_disk["steps"] == 12 and on_disk["num_params"] > 0 and on_disk["tokens_seen"] > 0
    for key in ("git_sha", "versions", "date", "device", "config", "split", "protocol"):
        assert on_disk[key], key
    assert on_disk["protocol"] == "blocked:8" and on_disk["split"] == "validation"


def test_toy_section_evaluates_under_both_protocols(toy_run):
    _, wd, data_dir = toy_run
    blocked, p1 = app.evaluate_run(toy.SECTION, wd, protocol="blocked:8", data_dir=data_dir, show_progress=False)
    stride, p2 = app.evaluate_run(toy.SECTION, wd, protocol="stride1", data_dir=data_dir, show_progress=False)
    assert p1.name == "validation_blocked_8.json" and p2.name == "validation_stride1.json"
    for r, proto in ((blocked, "blocked:8"), (stride, "stride1")):
        assert read_row(wd / "evals" / f"validation_{proto.replace(':', '_')}.json")["protocol"] == proto
        assert r["kind"] == "eval" and r["metrics"]["eval_documents"] == 3
    # Same scored targets (every target of the 3 documents), same word count, different context.
    assert blocked["metrics"]["eval_tokens"] == stride["metrics"]["eval_tokens"]
    assert blocked["metrics"]["eval_words"] == stride["metrics"]["eval_words"] > 0
    with pytest.raises(app.UserError, match="max-examples"):
        app.evaluate_run(toy.SECTION, wd, max_examples=-1, data_dir=data_dir)


def test_toy_section_samples(toy_run):
    _, wd, data_dir = toy_run
    summary, outdir = app.sample_run(toy.SECTION, wd, num=2, temperature=0.0, data_dir=data_dir)
    assert summary == {"samples": 2}
    rows = json.loads((outdir / "toy.json").read_text())["samples"]
    assert len(rows) == 2 and all(1 <= len(r["output"]) <= 8 for r in rows)
    for bad, msg in (
        (dict(fill=8), "--fill"), (dict(fill=-1), "--fill"), (dict(num=0), "--num"), (dict(top_p=0.0), "--top-p"),
        (dict(top_p=-1.0), "--top-p"), (dict(temperature=float("nan")), "--temperature"), (dict(seed=-1), "--seed"),
        (dict(top_k=-2), "--top-k"),
    ):  # fmt: skip
        with pytest.raises(app.UserError, match=msg):
            app.sample_run(toy.SECTION, wd, data_dir=data_dir, **bad)


def test_corpus_training_batches_are_pure_functions_of_the_step(toy_run):
    _, _, data_dir = toy_run
    pipe = toy.SECTION.make_dataset(toy.SMOKE, data_dir)
    a, b = pipe.train_batch(7, 8), pipe.train_batch(7, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    halves = [pipe.train_batch(7, 8, i, 2) for i in range(2)]
    assert all(np.array_equal(np.concatenate([h[k] for h in halves]), a[k]) for k in a)
    # Positions are offsets in the document, not in the crop: a crop's positions end at its end.
    nonpad = a["inputs"] != 0
    assert (a["positions"][..., 0][nonpad] >= 1).all()


def test_crops_are_uniform_over_document_positions(toy_run):
    """Documents are drawn in proportion to their crop ends: a long document is seen as often,
    per target, as a short one."""
    _, _, data_dir = toy_run
    pipe = toy.SECTION.make_dataset(toy.SMOKE, data_dir)
    n = pipe._lengths - 1
    ends_per_doc = n - np.minimum(pipe.min_crop, n) + 1
    rng_docs = np.concatenate(
        [np.searchsorted(pipe._cum, np.random.default_rng([0, s]).integers(0, pipe._cum[-1], 8), side="right")
         for s in range(400)]
    )  # fmt: skip
    freq = np.bincount(rng_docs, minlength=len(n)) / len(rng_docs)
    np.testing.assert_allclose(freq, ends_per_doc / ends_per_doc.sum(), atol=0.03)


def test_prefetcher_yields_the_same_batches_in_order():
    made = []

    def make(s):
        made.append(s)
        return {"x": np.full(3, s)}

    with Prefetcher(make, 5, 9, depth=2) as pf:
        got = [int(pf.get(s)["x"][0]) for s in range(5, 9)]
    assert got == [5, 6, 7, 8] and made == [5, 6, 7, 8]

    def boom(s):
        raise ValueError(f"bad step {s}")

    with Prefetcher(boom, 0, 3) as pf, pytest.raises(ValueError, match="bad step 0"):
        pf.get(0)


def test_paper_preset_without_data_names_the_prepare_command(tmp_path):
    paper = dataclasses.replace(toy.SMOKE, preset="smoke", scale="custom", data=toy.ToyData(corpus="main"))
    with pytest.raises(app.UserError, match="repro data prepare toy --source DIR"):
        app.pipeline_for(toy.SECTION, paper, tmp_path)


def test_summary_lines_are_the_sections_own():
    """`repro run` / `repro eval` print a section's extra facts after nats/token (copy: exact match)."""
    m = {"nats_per_token": 1.0, "sequence_accuracy": 0.5, "eval_sequences": 4}
    assert SECTIONS["copy"].summary_lines(m) == ["sequence exact match 50.0000% of 4"]
    assert SECTIONS["copy"].summary_lines({"nats_per_token": 1.0}) == []
    assert toy.SECTION.summary_lines(m) == [] and SECTIONS["pg19"].summary_lines(m) == []


def test_run_and_eval_print_the_sections_summary_lines(capsys):
    import cli
    from repro.data.source import DatasetInfo
    from repro.results import make_row

    m = {"nats_per_token": 1.0, "nats_per_token_stderr": 0.01, "bits_per_token": 1.4427, "sequence_accuracy": 0.5,
         "eval_sequences": 4, "scored_token_accuracy": 0.75, "protocol": "blocked:16"}  # fmt: skip
    for sec, extra in ((SECTIONS["copy"], ", sequence exact match 50.0000% of 4"), (toy.SECTION, "")):
        exp = sec.presets["smoke"]
        row = make_row(kind="eval", exp=exp, section=sec, dataset=DatasetInfo("d", "v", False), split="validation",
                       metrics=m, steps=1, num_params=1)  # fmt: skip
        cli._print_results(sec, row)
        assert f"nats/token 1.0000 ± 0.0100, bits/token 1.4427{extra}\n" in capsys.readouterr().out
