"""`repro data prepare` from the layouts researchers have on disk (issue 25 section 1): Hugging Face
Hub parquet (the main branch and the refs/convert/parquet conversion) for WikiText-103 and PG-19,
and tensorflow-datasets TFRecords for PG-19. Each tiny corpus is written both ways, locally, and
the prepared stores are byte-identical to the official layout's (same store and tokenizer hashes)."""

import csv
import io
import random
import sys
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ld, one_error_line, varint, write_tfrecord

from repro.data import pg19, wikitext103
from repro.data.demos.wikitext103 import gensim_enwiki_path, strip_markup, wikipedia_pages, wikitext_tokenize
from repro.data.source import DataError
from repro.data.store import prepare

WT103, PG19 = wikitext103.FORMAT, pg19.FORMAT


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    """Real English paragraphs (gensim's Wikipedia excerpt, markup stripped)."""
    pages = islice(wikipedia_pages(gensim_enwiki_path()), 12)
    return [s for _, markup in pages for level, s in strip_markup(markup) if level == 0 and len(s) > 80]


def _prepare(fmt, source, out, options):
    return prepare(fmt, source, out, options, corpus="main", is_paper_data=True, dataset_name="x")


def _same_store(a: dict, b: dict) -> None:
    assert a["files_sha256"] == b["files_sha256"]
    assert a["tokenizer"] == b["tokenizer"] and a["splits"] == b["splits"]


def _write_parquet(path: Path, columns: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=3)  # several row groups
    return path


# ------------------------------------------------------------------------------------------ WikiText-103


def _wiki_files(paragraphs) -> dict[str, str]:
    """wiki.{train,valid,test}.tokens of a few articles, WikiText-style (blank lines are " ")."""
    arts = [paragraphs[i : i + 4] for i in range(0, 40, 4)]

    def article(i, paras):
        lines = [" ", f" = Article {i} = ", " "]
        for j, p in enumerate(paras):
            if j == 2:
                lines += [f" = = Section {i}.{j} = = ", " "]
            lines.append(f" {wikitext_tokenize(p)} ")
        return lines

    split = {"train": range(0, 8), "valid": range(8, 9), "test": range(9, 10)}
    return {s: "".join(line + "\n" for i in idx for line in article(i, arts[i])) for s, idx in split.items()}


def _hub_rows(text: str) -> list[str]:
    """The Hub's rows of a WikiText file: its lines with their newline, blank lines as ""."""
    return [line if line.strip() else "" for line in text.splitlines(keepends=True)]


def _write_wiki_hub(root: Path, files: dict[str, str], config: str, converted: bool) -> Path:
    d = root / config
    names = {"train": "train", "valid": "validation", "test": "test"}
    for stem, text in files.items():
        rows, split = _hub_rows(text), names[stem]
        parts = [rows[: len(rows) // 2], rows[len(rows) // 2 :]] if split == "train" else [rows]
        for k, part in enumerate(parts):
            name = f"{split}/{k:04d}.parquet" if converted else f"{split}-{k:05d}-of-{len(parts):05d}.parquet"
            _write_parquet(d / name, {"text": part})
    return root


@pytest.mark.parametrize("converted", [False, True], ids=["hub", "hub-converted"])
def test_wikitext_hub_parquet_prepares_the_same_store_as_the_tokens_files(tmp_path, paragraphs, converted):
    files = _wiki_files(paragraphs)
    official = tmp_path / "official" / "wikitext-103"
    official.mkdir(parents=True)
    for stem, text in files.items():
        (official / f"wiki.{stem}.tokens").write_text(text, encoding="utf-8")
    hub = _write_wiki_hub(tmp_path / "hub", files, "wikitext-103-v1", converted)
    want = _prepare(WT103, official.parent, tmp_path / "a", {})
    got = _prepare(WT103, hub, tmp_path / "b", {})
    _same_store(want, got)
    assert want["tokenizer"]["identity"].startswith("word")
    assert got["source"]["variant"] == ("hub-converted:tokens" if converted else "hub:tokens")
    assert want["source"]["variant"] == "tokens"
    # The config folder itself is a source too.
    assert WT103.variant(hub / "wikitext-103-v1") == got["source"]["variant"]


def test_wikitext_hub_raw_config_is_the_raw_variant(tmp_path, paragraphs):
    files = _wiki_files(paragraphs)
    official = tmp_path / "official" / "wikitext-103-raw"
    official.mkdir(parents=True)
    for stem, text in files.items():
        (official / f"wiki.{stem}.raw").write_text(text, encoding="utf-8")
    hub = _write_wiki_hub(tmp_path / "hub", files, "wikitext-103-raw-v1", converted=True)
    opts = {"vocab_size": 600, "max_train_bytes": 20_000}  # SentencePiece (the raw default), sampled input
    want = _prepare(WT103, official.parent, tmp_path / "a", opts)
    got = _prepare(WT103, hub, tmp_path / "b", opts)
    _same_store(want, got)
    assert want["tokenizer"]["identity"].startswith("sentencepiece") and got["source"]["variant"] == "hub-converted:raw"


# ------------------------------------------------------------------------------------------ PG-19


def _books(paragraphs) -> dict[str, dict[str, str]]:
    """split -> book id -> text (no leading / trailing whitespace: TFDS strips it)."""
    text = ["\n\n".join(paragraphs[i : i + 5]) for i in range(0, 40, 5)]
    ids = [10146, 305, 7, 28020, 999, 41, 1342, 12]
    books = {"train": {}, "validation": {}, "test": {}}
    for k, (i, t) in enumerate(zip(ids, text, strict=True)):
        books["train" if k < 6 else "validation" if k == 6 else "test"][str(i)] = t.strip()
    return books


def _meta(book_id: str) -> list[str]:
    return [f"Book, number {book_id}", str(1800 + int(book_id) % 100), f"http://www.gutenberg.org/ebooks/{book_id}"]


def _write_pg19_official(root: Path, books) -> Path:
    rows = []
    for split, bs in books.items():
        (root / split).mkdir(parents=True)
        for i, t in bs.items():
            (root / split / f"{i}.txt").write_text(t, encoding="utf-8")
            rows.append([i, *_meta(i)])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    (root / "metadata.csv").write_text(buf.getvalue())
    return root


def _write_pg19_hub(root: Path, books, converted: bool) -> Path:
    for split, bs in books.items():
        items = list(bs.items())
        random.Random(0).shuffle(items)  # the Hub's row order is not the book-id order
        parts = [items[:3], items[3:]] if split == "train" else [items]
        for k, part in enumerate(parts):
            cols = {"short_book_title": [_meta(i)[0] for i, _ in part],
                    "publication_date": [_meta(i)[1] for i, _ in part],
                    "url": [_meta(i)[2] for i, _ in part], "text": [t for _, t in part]}  # fmt: skip
            shard = f"{split}-{k:05d}-of-{len(parts):05d}.parquet"
            name = f"default/{split}/{k:04d}.parquet" if converted else f"data/{shard}"
            _write_parquet(root / name, cols)
    return root


def _example(features: dict) -> bytes:
    """A serialized tf.train.Example (str / bytes -> bytes_list, int -> packed int64_list)."""
    entries = b""
    for k, v in features.items():
        if isinstance(v, int):
            feature = ld(3, ld(1, varint(v)))
        else:
            feature = ld(1, ld(1, v.encode() if isinstance(v, str) else v))
        entries += ld(1, ld(1, k.encode()) + ld(2, feature))
    return ld(1, entries)


def _tfds_book(i: str, t: str) -> bytes:
    title, date, link = _meta(i)
    return _example({"book_text": t, "book_id": int(i), "book_title": title, "publication_date": date,
                     "book_link": link})  # fmt: skip


def _write_pg19_tfds(root: Path, books) -> Path:
    d = root / "pg19" / "0.1.1"
    for split, bs in books.items():
        items = list(bs.items())
        random.Random(1).shuffle(items)  # TFDS shuffles examples
        parts = [items[:2], items[2:]] if split == "train" else [items]
        for k, part in enumerate(parts):
            write_tfrecord(d / f"pg19-{split}.tfrecord-{k:05d}-of-{len(parts):05d}", [_tfds_book(*b) for b in part])
    (d / "dataset_info.json").write_text("{}")
    return root


@pytest.mark.parametrize("layout", ["hub", "hub-converted", "tfds"])
def test_pg19_hub_and_tfds_prepare_the_same_store_as_the_official_layout(tmp_path, paragraphs, layout):
    books = _books(paragraphs)
    official = _write_pg19_official(tmp_path / "official", books)
    if layout == "tfds":
        other = _write_pg19_tfds(tmp_path / "tensorflow_datasets", books)
    else:
        other = _write_pg19_hub(tmp_path / "hub", books, converted=layout == "hub-converted")
    opts = {"tokenizer": "sentencepiece", "vocab_size": 600, "max_train_bytes": 20_000}
    want = _prepare(PG19, official, tmp_path / "a", opts)
    got = _prepare(PG19, other, tmp_path / "b", opts)
    _same_store(want, got)
    assert want["source"]["variant"] == "default" and got["source"]["variant"] == layout
    assert (tmp_path / "b" / "train.names.txt").read_text().split() == ["7", "41", "305", "999", "10146", "28020"]


def test_pg19_layout_labels_name_the_users_files(tmp_path, paragraphs):
    hub = _write_pg19_hub(tmp_path / "hub", _books(paragraphs), converted=False)
    files = PG19.scan(hub)
    labels = [f.label for f in files["validation"]]
    assert labels == [f"{hub / 'data' / 'validation-00000-of-00001.parquet'}:1342"]
    m = _prepare(PG19, hub, tmp_path / "a", {"tokenizer": "bytes"})
    m2 = _prepare(PG19, hub, tmp_path / "b", {"tokenizer": "bytes"})
    assert m["source"]["sha256"] == m2["source"]["sha256"]  # no staging path in the source hash


# ------------------------------------------------------------------------------------------ bad input


def test_bad_parquet_is_one_line_naming_the_file(cli_inproc, tmp_path, paragraphs):
    files = _wiki_files(paragraphs)

    def fresh(name):
        return _write_wiki_hub(tmp_path / name, files, "wikitext-103-v1", converted=False)

    def prepare_cli(src, section="wikitext103"):
        return cli_inproc("data", "prepare", section, "--source", str(src), "--data-dir", str(tmp_path / "data"))

    src = fresh("columns")
    bad = _write_parquet(src / "wikitext-103-v1" / "test-00000-of-00001.parquet", {"line": ["x"], "n": ["1"]})
    code, _, err = prepare_cli(src)
    assert one_error_line(code, err) and f"{bad}: no column 'text' (columns: line, n)" in err, err

    src = fresh("corrupt")
    bad = src / "wikitext-103-v1" / "validation-00000-of-00001.parquet"
    bad.write_bytes(bad.read_bytes()[:40])
    code, _, err = prepare_cli(src)
    assert one_error_line(code, err) and f"{bad}: not a readable parquet file" in err, err

    src = fresh("empty")
    bad = _write_parquet(src / "wikitext-103-v1" / "test-00000-of-00001.parquet", {"text": pa.array([], pa.string())})
    code, _, err = prepare_cli(src)
    assert one_error_line(code, err) and f"{bad}: no rows (an empty split)" in err, err

    src = fresh("missing")
    (src / "wikitext-103-v1" / "validation-00000-of-00001.parquet").unlink()
    code, _, err = prepare_cli(src)
    assert one_error_line(code, err) and "no validation parquet file" in err, err

    src = fresh("types")
    _write_parquet(src / "wikitext-103-v1" / "test-00000-of-00001.parquet", {"text": [1, 2]})
    code, _, err = prepare_cli(src)
    assert one_error_line(code, err) and "column 'text' is int64, not a string" in err, err

    books = _books(paragraphs)
    src = _write_pg19_hub(tmp_path / "pgcols", books, converted=False)
    bad = _write_parquet(src / "data" / "test-00000-of-00001.parquet", {"text": ["a book"]})
    code, _, err = prepare_cli(src, "pg19")
    assert one_error_line(code, err) and f"{bad}: no column 'short_book_title'" in err, err


def test_bad_tfds_records_are_one_line(tmp_path, paragraphs):
    src = _write_pg19_tfds(tmp_path / "t", _books(paragraphs))
    shard = src / "pg19" / "0.1.1" / "pg19-test.tfrecord-00000-of-00001"
    write_tfrecord(shard, [_example({"text": "no book_text"})])
    with pytest.raises(DataError, match=r"pg19-test.tfrecord-00000-of-00001#0: no single 'book_text' feature"):
        PG19.scan(src)
    shard.write_bytes(b"\x00" * 30)
    with pytest.raises(DataError, match=r"pg19-test.tfrecord-00000-of-00001: not a TFRecord file or corrupt"):
        PG19.scan(src)


def test_a_folder_of_no_known_layout_lists_what_was_looked_for(cli_inproc, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("x")
    for section, needles in (
        ("wikitext103", ("wiki.train.tokens", "wikitext-103-v1/", "train-*.parquet", "train/*.parquet")),
        ("pg19", ("metadata.csv", "train-*.parquet", "train/*.parquet", "pg19-train.tfrecord-*")),
    ):
        code, _, err = cli_inproc("data", "prepare", section, "--source", str(tmp_path / "src"),
                                  "--data-dir", str(tmp_path / "data"))  # fmt: skip
        assert one_error_line(code, err) and all(n in err for n in needles), err


def test_without_pyarrow_a_parquet_source_is_one_line_with_the_install_hint(cli_inproc, tmp_path, paragraphs,
                                                                           monkeypatch):  # fmt: skip
    src = _write_wiki_hub(tmp_path / "hub", _wiki_files(paragraphs), "wikitext-103-v1", converted=False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = cli_inproc("data", "prepare", "wikitext103", "--source", str(src), "--data-dir",
                              str(tmp_path / "data"))  # fmt: skip
    assert one_error_line(code, err) and "needs pyarrow; pip install 'repro[hub]'" in err, err
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("manifest.json"))
