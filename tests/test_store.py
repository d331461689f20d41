"""Prepared corpora (repro/data/store.py) and `repro data prepare / verify / info / demo`, on the
toy section of tests/toy_section.py: layout, manifest, atomicity, verification, bad input."""

import json

import numpy as np
import pytest
import toy_section as toy
from conftest import one_error_line

from repro.data.source import DataError, RawFormat
from repro.data.store import Corpus, content_dtype, list_corpora, prepare, read_manifest, verify
from repro.data.text import ByteTokenizer

FMT = toy.ToyFormat()


def _prepare(src, out, **kw):
    return prepare(FMT, src, out, {}, corpus="demo", is_paper_data=False, dataset_name="toy", **kw)


@pytest.fixture
def raw(tmp_path):
    return FMT.demo(tmp_path / "raw")


def test_prepare_writes_store_and_manifest(raw, tmp_path):
    out = tmp_path / "data" / "toy" / "demo"
    m = _prepare(raw, out)
    assert read_manifest(out) == m
    assert m["splits"]["train"]["documents"] == 12 and m["splits"]["validation"]["documents"] == 3
    texts = [p.read_bytes() for p in sorted((raw / "train").glob("*.txt"))]
    assert m["splits"]["train"]["tokens"] == sum(len(t) for t in texts)
    assert m["splits"]["train"]["words"] == sum(len(t.split()) for t in texts)
    assert m["splits"]["train"]["bytes"] == sum(len(t) for t in texts)
    assert m["content_dtype"] == "uint8" and m["tokenizer"]["vocab_size"] == 256
    assert len(m["source"]["sha256"]) == 64 and m["git_sha"] and m["seconds"] >= 0
    c = Corpus(out, FMT, toy.ToyData())
    doc = c.document("train", 2)
    assert bytes((doc.tokens[1:-1] - 3).astype(np.uint8)) == texts[2]
    assert doc.tokens[0] == 2 and doc.tokens[-1] == 1 and doc.num_words == len(texts[2].split())
    # The slice path that training uses equals slicing the whole document.
    for a, b in ((0, 5), (3, 9), (len(doc.tokens) - 4, len(doc.tokens))):
        np.testing.assert_array_equal(c.train_slice(2, a, b)[0], doc.tokens[a:b])
    assert verify(out)["corpus"] == "demo"
    assert [x["path"] for x in list_corpora(tmp_path / "data")] == [str(out)]


def test_dtype_follows_the_vocabulary():
    assert content_dtype(256) == np.uint8 and content_dtype(257) == np.uint16
    assert content_dtype(32000) == np.uint16 and content_dtype(267_735) == np.uint32


def test_interrupted_prepare_leaves_nothing_finished_and_rerun_completes(raw, tmp_path, monkeypatch):
    out = tmp_path / "c"
    calls = {"n": 0}
    real_read = toy.ToyFormat.read

    def dying_read(self, f, tok):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the files
        yield from real_read(self, f, tok)

    monkeypatch.setattr(toy.ToyFormat, "read", dying_read)
    with pytest.raises(KeyboardInterrupt):
        _prepare(raw, out)
    assert not out.exists() and not out.with_name("c.partial").exists()
    # A SIGKILL leaves a partial directory: it never looks finished, and a rerun replaces it.
    (tmp_path / "c.partial").mkdir()
    (tmp_path / "c.partial" / "train.bin").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a prepared corpus"):
        Corpus(tmp_path / "c.partial", FMT, toy.ToyData())
    monkeypatch.setattr(toy.ToyFormat, "read", real_read)
    _prepare(raw, out)
    assert verify(out) and not out.with_name("c.partial").exists()


def test_verify_detects_damage(raw, tmp_path):
    out = tmp_path / "c"
    _prepare(raw, out)
    b = bytearray((out / "train.bin").read_bytes())
    b[3] ^= 0xFF
    (out / "train.bin").write_bytes(bytes(b))
    with pytest.raises(DataError, match="train.bin does not match"):
        verify(out)


def test_bad_sources_are_one_clear_error(raw, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _prepare(tmp_path / "nope", tmp_path / "c")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        _prepare(tmp_path / "file", tmp_path / "c")
    (raw / "validation").rename(raw / "valid")
    with pytest.raises(DataError, match="missing split folder"):
        _prepare(raw, tmp_path / "c")
    (raw / "valid").rename(raw / "validation")
    (raw / "train" / "000.txt").write_text("BAD doc")
    with pytest.raises(DataError, match="000.txt: not a toy document"):
        _prepare(raw, tmp_path / "c")
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def test_skipped_files_are_listed(raw, tmp_path):
    (raw / "train" / "000.txt").write_text("")
    warnings = []
    m = _prepare(raw, tmp_path / "c", warn=warnings.append)
    assert m["skipped"] == [{"file": str(raw / "train" / "000.txt"), "split": "train", "reason": "empty file"}]
    assert m["splits"]["train"]["documents"] == 11 and "000.txt" in warnings[0]


class _Letters(toy.ToyFormat):
    """The toy format with its own tokenizer (bytes as text) but no load_tokenizer: readers would
    decode with the default byte values."""

    def fit_tokenizer(self, train_files, out_dir, options):
        return ByteTokenizer()


class _Loads(toy.ToyFormat):
    """The toy format (byte values) whose load_tokenizer gives another tokenizer."""

    def load_tokenizer(self, corpus_dir, manifest):
        return ByteTokenizer()


def test_a_format_that_cannot_load_its_tokenizer_is_refused_at_prepare(raw, tmp_path):
    out = tmp_path / "c"
    with pytest.raises(DataError) as e:
        prepare(_Letters(), raw, out, {}, corpus="demo", is_paper_data=False, dataset_name="toy")
    msg = str(e.value)
    assert "\n" not in msg and "'utf8-bytes:256'" in msg and "no load_tokenizer" in msg, msg
    assert not out.exists() and not out.with_name("c.partial").exists()
    with pytest.raises(DataError, match="_Loads.load_tokenizer gives tokenizer 'utf8-bytes:256'"):
        prepare(_Loads(), raw, out, {}, corpus="demo", is_paper_data=False, dataset_name="toy")
    assert not out.exists()


def test_every_format_s_tokenizer_is_checked_against_the_manifest(raw, tmp_path):
    """Identity, vocabulary size and hash of whatever tokenizer a format loads, not only a text one's."""
    out = tmp_path / "c"
    _prepare(raw, out)
    assert Corpus(out, FMT, None).tokenizer.identity == "byte-values:256"
    with pytest.raises(DataError, match="gives tokenizer 'utf8-bytes:256', but the corpus was prepared with"):
        Corpus(out, _Loads(), None)
    m = read_manifest(out)
    m["tokenizer"]["hash"] = "0" * 16
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="tokenizer files do not match the manifest"):
        Corpus(out, FMT, None)


def test_base_format_has_no_reader():
    with pytest.raises(NotImplementedError):
        RawFormat().scan(None)


# ----------------------------------------------------------------------------- the CLI


def test_cli_data_demo_prepare_verify_info(cli_inproc, tmp_path):
    d = str(tmp_path / "data")
    code, out, err = cli_inproc("data", "demo", "toy", "--out", str(tmp_path / "raw"))
    assert code == 0 and "written:" in out
    code, out, err = cli_inproc("data", "prepare", "toy", "--source", str(tmp_path / "raw"),
                          "--data-dir", d)  # fmt: skip
    assert code == 0, err
    assert "train: 12 documents" in out and (tmp_path / "data" / "toy" / "main" / "manifest.json").is_file()
    # Demo raw data prepared as the main corpus is still labelled a demo, never the paper's data.
    m = read_manifest(tmp_path / "data" / "toy" / "main")
    assert m["dataset"] == toy.SECTION.demo_name and m["is_paper_data"] is False
    code, out, err = cli_inproc("data", "verify", "toy", "--data-dir", d)
    assert code == 0 and out.startswith("ok:")
    code, out, err = cli_inproc("data", "info", "--data-dir", d)
    assert code == 0 and "toy/main" in out
    code, out, err = cli_inproc("data", "prepare", "toy", "--demo", "--data-dir", d)
    assert code == 0 and (tmp_path / "data" / "toy" / "demo" / "manifest.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "prepare", "copy", "--source", "."], "has no corpus to prepare"),
        (["data", "prepare", "toy", "--source", "/nonexistent/raw"], "does not exist"),
        (["data", "prepare", "toy"], "--source DIR is required"),
        (["data", "prepare", "nosuch", "--source", "."], "unknown section"),
        (["data", "verify", "toy", "--data-dir", "/nonexistent/data"], "nothing prepared for toy"),
        (["data", "prepare", "toy", "--source", ".", "--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_cli_data_bad_input_is_one_line(cli_inproc, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli_inproc(*args)
    assert message in one_error_line(code, err), err
    assert not (tmp_path / "data").exists()


def test_cli_demo_refuses_a_nonempty_directory(cli_inproc, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    code, _, err = cli_inproc("data", "demo", "toy", "--out", str(tmp_path / "x"))
    assert code == 2 and "not empty" in err and (tmp_path / "x" / "keep.txt").read_text() == "mine"
