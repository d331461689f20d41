"""A user's own data end to end (issue 27): a corpus prepared from the user's source is what the
cpu / smoke presets train on, evaluation's baselines score the model's targets, a store prepared
again is refused by the runs trained on the old one, sampling never emits an id the tokenizer
cannot decode, SentencePiece's "vocabulary size too high" is one line naming what fits, MAESTRO's
version is checked, report plots do not collide, and small labelling / text-normalisation fixes."""

import csv
import dataclasses
import io
import json

import numpy as np
import pytest
import toy_section as toy
from conftest import one_error_line
from rich.console import Console
from test_maestro_data import _maestro

from experiments import SECTIONS
from repro import app
from repro.data.source import DataError, DatasetInfo, SourceFile, dataset_label
from repro.data.store import data_identity, read_manifest
from repro.data.text import ByteTokenizer, _file_lines
from repro.results import read_row

PG19 = SECTIONS["pg19"]


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=400, soft_wrap=True), buf


def pg19_source(root, *, train_bytes=40_000, books=(3, 2, 1), seed=0, lexicon=1500):
    """A PG-19-layout corpus of the user's own (random-word books), not PG-19."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), int(rng.integers(2, 9)))) for _ in range(lexicon)]
    rows, book_id = [], 1000
    for split, n in zip(("train", "validation", "test"), books, strict=True):
        (root / split).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            size = train_bytes if split == "train" else 1500
            lines, total = [], 0
            while total < size:
                line = " ".join(rng.choice(words, 12))
                lines.append(line)
                total += len(line) + 1
            (root / split / f"{book_id}.txt").write_text("\n".join(lines) + "\n")
            rows.append([str(book_id), f"Book {book_id}", "1900"])
            book_id += 1
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


@pytest.fixture(scope="module")
def pg19_user(tmp_path_factory):
    """`repro data prepare pg19 --source SRC --preset smoke`, then `repro run pg19 --preset smoke`."""
    root = tmp_path_factory.mktemp("pg19_user")
    src, data = pg19_source(root / "src"), root / "data"
    exp = PG19.presets["smoke"]
    m = PG19.prepare(exp.data, src, data)
    console, buf = _console()
    wd = root / "run"
    row = app.run(PG19, exp, wd, data_dir=data, console=console, show_progress=False)
    return {"row": row, "wd": wd, "data": data, "manifest": m, "log": buf.getvalue(), "src": src}


# ----------------------------------------------------------------------------- 1. prepared data is used


def test_smoke_run_trains_on_the_users_prepared_store(pg19_user):
    row, wd, m = pg19_user["row"], pg19_user["wd"], pg19_user["manifest"]
    store = PG19.corpus_dir(dataclasses.replace(PG19.presets["smoke"].data, corpus="main"), pg19_user["data"])
    assert read_manifest(store) == m and m["corpus"] == "main"
    assert read_row(wd / "results.json")["data_hash"] == data_identity(m)[:16] == row["dataset"]["data_hash"]
    assert row["dataset"]["corpus"] == "main" and row["dataset"]["manifest_hash"]
    assert json.loads((wd / "config.json").read_text())["data"]["corpus"] == "main"  # recorded, not "auto"
    assert json.loads((wd / "data.json").read_text())["data_hash"] == row["data_hash"]
    assert f"your prepared pg19 corpus in {store}" in pg19_user["log"]
    assert "data: corpus 'main' (PG-19 layout: user data) in" in pg19_user["log"]
    # The user's own books are not PG-19: labelled "user", never the paper's data.
    assert m["origin"] == "user" and m["is_paper_data"] is False and "28,602" in m["origin_note"]
    assert row["dataset"]["name"] == "PG-19 layout: user data" and not row["dataset"]["is_paper_data"]


def test_explicit_demo_corpus_still_forces_the_demo(tmp_path, cli_inproc):
    raw = toy.ToyFormat().demo(tmp_path / "mine")  # the user's files (no demo marker)
    code, _, err = cli_inproc("data", "prepare", "toy", "--source", str(raw), "--data-dir", str(tmp_path / "d"))
    assert code == 0, err
    exp = toy.SMOKE
    user = app.resolve_for(toy.SECTION, exp, tmp_path / "w", tmp_path / "d")
    demo = dataclasses.replace(exp, data=dataclasses.replace(exp.data, corpus="demo"))
    assert user.data.corpus == "main" and app.resolve_for(toy.SECTION, demo, tmp_path / "w", tmp_path / "d") == demo
    src = app.source_for(toy.SECTION, demo, tmp_path / "d")
    assert src.info.corpus == "demo" and src.info.name == toy.SECTION.demo_name


def test_a_store_prepared_with_other_options_is_named_and_the_demo_used(tmp_path):
    """Prepared with another tokenizer (as the paper preset's 32k vs the cpu preset's 4096): the
    run says so in one line, with the command that prepares it for this preset."""
    src = pg19_source(tmp_path / "src", train_bytes=3000, books=(1, 1, 1))
    cfg = dataclasses.replace(PG19.presets["paper"].data, tokenizer="bytes")
    PG19.prepare(cfg, src, tmp_path / "d")
    said = []
    exp = PG19.resolve(PG19.presets["smoke"], tmp_path / "d", log=said.append)
    assert exp.data.corpus == "demo" and len(said) == 1
    assert "prepared with other options (tokenizer bytes (preset smoke: sentencepiece))" in said[0]
    assert f"repro data prepare pg19 --source {src} --preset smoke" in said[0]


# ----------------------------------------------------------------------------- 2. baselines on the same targets


def test_eval_baselines_score_exactly_the_models_targets(pg19_user):
    row, wd, data = pg19_user["row"], pg19_user["wd"], pg19_user["data"]
    assert row["baselines"]["unigram"]["eval_tokens"] == row["metrics"]["eval_tokens"]  # repro run
    console, _ = _console()
    # repro eval scores what the run evaluates by default: its data.eval_examples=1 of the split's 2
    ev, _ = app.evaluate_run(PG19, wd, data_dir=data, show_progress=False, console=console)
    assert ev["metrics"]["eval_documents"] == row["metrics"]["eval_documents"] == 1
    assert ev["metrics"]["eval_tokens"] == row["metrics"]["eval_tokens"] == ev["baselines"]["unigram"]["eval_tokens"]
    assert ev["metrics"]["nats_per_token"] == pytest.approx(row["metrics"]["nats_per_token"], rel=1e-5)
    assert ev["baselines"]["unigram"]["value"] == pytest.approx(row["baselines"]["unigram"]["value"])
    # ... and an explicit --max-examples wins, past data.eval_examples: the whole split here.
    two, _ = app.evaluate_run(PG19, wd, data_dir=data, max_examples=2, show_progress=False, console=console)
    assert two["metrics"]["eval_documents"] == 2
    assert two["baselines"]["unigram"]["eval_tokens"] == two["metrics"]["eval_tokens"] > row["metrics"]["eval_tokens"]


# ----------------------------------------------------------------------------- 3. re-preparing is refused by old runs


def test_a_run_refuses_a_store_prepared_again_with_other_data(tmp_path, cli_inproc, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw, d, wd = toy.ToyFormat().demo(tmp_path / "mine"), str(tmp_path / "d"), tmp_path / "runs" / "toy" / "smoke"
    prep = ("data", "prepare", "toy", "--source", str(raw), "--data-dir", d)
    assert cli_inproc(*prep)[0] == 0
    code, _, err = cli_inproc("run", "toy", "--workdir", str(wd), "--data-dir", d, "--no-progress")
    assert code == 0, err
    results = (wd / "results.json").read_bytes()
    # Runs under ./runs point at the store: preparing it again needs --force.
    code, _, err = cli_inproc(*prep)
    assert "1 run(s) under runs/ were trained on" in one_error_line(code, err) and "--force" in err
    # The same data again: the run is unaffected.
    code, _, err = cli_inproc(*prep, "--force")
    assert code == 0 and "the same data" in err
    assert cli_inproc("eval", "toy", "--workdir", str(wd), "--data-dir", d, "--no-progress")[0] == 0
    evals = sorted((wd / "evals").iterdir())
    before = [p.read_bytes() for p in evals]
    # Other data: eval, sample and resume refuse it (one line, exit 2, nothing written).
    (raw / "train" / "999.txt").write_text("hello toy " * 50)
    code, _, err = cli_inproc(*prep, "--force")
    assert code == 0 and "its data changed" in err and "(1 under runs/)" in err
    for args, action in ((("eval", "toy", "--no-progress"), "evaluate"), (("sample", "toy"), "sample from"),
                         (("run", "toy", "--no-progress"), "resume")):  # fmt: skip
        code, _, err = cli_inproc(*args, "--workdir", str(wd), "--data-dir", d)
        assert f"refusing to {action}" in one_error_line(code, err), err
    assert (wd / "results.json").read_bytes() == results and not (wd / "samples").exists()
    assert [p.read_bytes() for p in sorted((wd / "evals").iterdir())] == before


# ----------------------------------------------------------------------------- 4. no undecodable ids


def test_sampling_masks_ids_past_the_data_vocabulary(tmp_path, monkeypatch):
    """The model's output vocabulary (300) is larger than the data's (259): no sampled id is past it."""
    exp = dataclasses.replace(toy.SMOKE, model=dataclasses.replace(toy.SMOKE.model, vocab_size=300))
    console, buf = _console()
    app.run(toy.SECTION, exp, tmp_path / "run", data_dir=tmp_path / "d", console=console, show_progress=False)
    assert "model.vocab_size=300 is larger than the data's vocabulary (259 ids)" in buf.getvalue()
    from repro.sample import sampler

    seen = {}
    real = sampler.generate

    def spy(model, prompts, num_new, cfg, **kw):
        seen["allowed"] = kw["allowed"]
        return real(model, prompts, num_new, cfg, **kw)

    monkeypatch.setattr(sampler, "generate", spy)
    app.sample_run(toy.SECTION, tmp_path / "run", num=2, data_dir=tmp_path / "d")
    ok = np.asarray(seen["allowed"](np.array([1, 5])))
    assert ok.shape == (2, 300) and ok[:, :259].all() and not ok[:, 259:].any()
    out = json.loads((tmp_path / "run" / "samples" / "toy.json").read_text())
    assert max(max(s["output"]) for s in out["samples"]) < 259


def test_prepare_warns_when_the_vocabulary_outgrows_the_presets_model(tmp_path, cli_inproc):
    raw = toy.ToyFormat().demo(tmp_path / "mine")
    code, _, err = cli_inproc("data", "prepare", "toy", "--source", str(raw), "--data-dir", str(tmp_path / "d"),
                              "--set", "model.vocab_size=100")  # fmt: skip
    assert code == 0 and "a run needs --set model.vocab_size=259" in err


# ----------------------------------------------------------------------------- 5. SentencePiece too small


def test_sentencepiece_vocabulary_too_high_is_one_line_and_prepare_takes_set(tmp_path, cli_inproc):
    src = pg19_source(tmp_path / "src", train_bytes=20_000, books=(1, 1, 1), lexicon=300)
    d = tmp_path / "d"
    code, out, err = cli_inproc("data", "prepare", "pg19", "--source", str(src), "--data-dir", str(d))
    line = one_error_line(code, err)
    assert "too small for a 32000-piece SentencePiece vocabulary" in line and "--set data.vocab_size=N" in line, err
    assert "Vocabulary size too high" not in err
    assert not (d / "pg19").exists() and not d.exists()  # a failed prepare leaves no empty folders
    code, out, err = cli_inproc("data", "prepare", "pg19", "--source", str(src), "--data-dir", str(d),
                                "--preset", "smoke", "--set", "data.vocab_size=300")  # fmt: skip
    assert code == 0, err
    assert (d / "pg19" / "main-sentencepiece-300-0-300000" / "manifest.json").is_file()


# ----------------------------------------------------------------------------- 6. MAESTRO version and folder

MAESTRO = SECTIONS["maestro"]


def test_maestro_source_with_one_versioned_folder_is_used_and_said(tmp_path, cli_inproc):
    _maestro(tmp_path / "demo")  # DIR/maestro-v3.0.0/, as `repro data demo maestro --out DIR` writes it
    code, out, err = cli_inproc("data", "prepare", "maestro", "--source", str(tmp_path / "demo"),
                                "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert code == 0, err
    assert f"using {tmp_path / 'demo' / 'maestro-v3.0.0'}: the one MAESTRO folder in {tmp_path / 'demo'}" in err
    assert "MAESTRO v3 (user data" in out and "(v3)" not in out  # the label says the version once


def test_maestro_version_must_match_the_preset(tmp_path, cli_inproc):
    v1, v3 = _maestro(tmp_path / "a", "v1.0.0"), _maestro(tmp_path / "b", "v3.0.0")
    d = str(tmp_path / "d")
    for src, preset, msg in ((v1, [], "is MAESTRO v1, but this preset is for MAESTRO v3: pass --preset paper_v1"),
                             (v3, ["--preset", "paper_v1"], "is MAESTRO v3, but this preset is for MAESTRO v1: "
                                                            "pass --preset paper_v3")):  # fmt: skip
        code, _, err = cli_inproc("data", "prepare", "maestro", "--source", str(src), "--data-dir", d, *preset)
        assert msg in one_error_line(code, err), err
    assert cli_inproc("data", "prepare", "maestro", "--source", str(v1), "--data-dir", d, "--preset", "cpu")[0] == 0
    paper_v3 = MAESTRO.presets["paper_v3"].data
    with pytest.raises(DataError, match="is MAESTRO v1, but this preset is for MAESTRO v3"):
        MAESTRO.check_data(paper_v3, {"source": {"variant": "v1"}}, tmp_path)


# ----------------------------------------------------------------------------- 7. report plots by run


def test_report_plots_are_named_by_run_and_report_finds_runs(tmp_path, cli_inproc, monkeypatch):
    from test_report import IM, _row

    from repro.report import write_report
    from repro.results import write_row

    demo = DatasetInfo(IM.demo_name, "png", False, "def")
    for name in ("a", "b"):
        wd = tmp_path / "runs" / name / "cpu"
        write_row(wd / "results.json", _row("cpu", 4.0, demo))
        (wd / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 5.0}) + "\n")
    files = write_report({"imagenet64": IM}, [tmp_path / "runs"], tmp_path / "out")
    curves = sorted(k for k in files if k.startswith("curves_"))
    assert curves == ["curves_imagenet64_cpu_a_cpu", "curves_imagenet64_cpu_b_cpu"]
    assert all(files[k].is_file() for k in curves)
    monkeypatch.chdir(tmp_path)  # `repro report` with no paths: results/ and runs/ (the README's runs)
    code, out, err = cli_inproc("report")
    assert code == 0, err
    md = (tmp_path / "results" / "report.md").read_text()
    assert "`runs`" in md and md.count("](../runs/") == 2  # both runs' rows link their results.json


# ----------------------------------------------------------------------------- 8. small ones


def test_bom_and_crlf_do_not_change_tokens_and_are_recorded(tmp_path):
    from repro.data.pg19 import FORMAT as PG
    from repro.data.wikitext103 import FORMAT as WT

    text = "The first line.\nA second one, longer.\n\nThe end.\n"
    plain, odd = tmp_path / "1.txt", tmp_path / "2.txt"
    plain.write_bytes(text.encode())
    odd.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    (a,), (b,) = (list(PG.read(SourceFile("train", p), ByteTokenizer())) for p in (plain, odd))
    np.testing.assert_array_equal(a.content, b.content)
    assert a.num_words == b.num_words and a.normalized == () and b.normalized == ("bom", "crlf")
    assert list(_file_lines(odd)) == list(_file_lines(plain))  # what SentencePiece / the word vocabulary see
    wiki = " = Title = \n a b c \n = Other = \n d e \n"
    (tmp_path / "w1").write_text(wiki)
    (tmp_path / "w2").write_bytes(b"\xef\xbb\xbf" + wiki.replace("\n", "\r\n").encode())
    docs = [list(WT.read(SourceFile("train", tmp_path / n), ByteTokenizer())) for n in ("w1", "w2")]
    assert [d.name for d in docs[1]] == ["Title", "Other"] == [d.name for d in docs[0]]
    assert all(np.array_equal(x.content, y.content) for x, y in zip(*docs, strict=True))
    # ... and the manifest counts the documents that were normalised.
    src = pg19_source(tmp_path / "src", train_bytes=2000, books=(2, 1, 1))
    book = next((src / "train").glob("*.txt"))
    book.write_bytes(book.read_bytes().replace(b"\n", b"\r\n"))
    cfg = dataclasses.replace(PG19.presets["paper"].data, tokenizer="bytes")
    m = PG19.prepare(cfg, src, tmp_path / "d")
    assert m["normalized"] == {"crlf": 1}


def test_wikitext_pointed_at_a_file_says_not_a_directory(tmp_path, cli_inproc):
    f = tmp_path / "wiki.train.tokens"
    f.write_text(" = T = \n a \n")
    code, _, err = cli_inproc("data", "prepare", "wikitext103", "--source", str(f), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "is not a directory" in err and "no wiki.train.tokens" not in err


def test_failed_prepare_leaves_no_empty_section_folder(tmp_path):
    raw = toy.ToyFormat().demo(tmp_path / "raw")
    (raw / "train" / "000.txt").write_text("BAD doc")
    with pytest.raises(DataError, match="not a toy document"):
        toy.SECTION.prepare(toy.SMOKE.data, raw, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_labels_are_not_doubled_and_a_downsampled_run_says_so():
    assert dataset_label("PG-19 (default)", "default") == "PG-19 (default)"
    assert dataset_label("PG-19", "default") == "PG-19"
    assert dataset_label("ImageNet 64x64 (van den Oord et al. 2016) (png)", "png").count("(png)") == 1
    assert dataset_label("MAESTRO v3", "v3") == "MAESTRO v3" and dataset_label("X", "tar") == "X (tar)"
    assert PG19.dataset_label("anything") == "PG-19"
    im = SECTIONS["imagenet64"]
    info = DatasetInfo(im.demo_name, "png", False, "h")
    assert im.data_info(im.presets["smoke"], info).name == im.demo_name + ", downsampled to 8x8"
    assert im.data_info(im.presets["paper"], info) == info
