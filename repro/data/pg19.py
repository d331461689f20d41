"""PG-19 (Rae et al. 2020; paper Section 5.3): books of Project Gutenberg, one document per book.

Official layout (github.com/google-deepmind/pg19, the GCS copy, the tfds builder)::

    metadata.csv            no header row; book_id, short_book_title, publication_date[, book_link]
    train/<book_id>.txt     28,602 books
    validation/<book_id>.txt    50
    test/<book_id>.txt         100

Other layouts of the same books (``variant`` in the manifest; the official one is "default"),
written back as the official layout and read as it (``repro.data.formats.stage``), so the store is
identical to the one prepared from ``metadata.csv`` + ``<split>/<id>.txt`` of the same books:

    "hub"            Hub parquet (``emozilla/pg19``; ``deepmind/pg19``): ``<split>-0000N-of-0000M.parquet``
    "hub-converted"  the Hub's parquet conversion: ``<split>/0000.parquet``
                     (either in ``source``, ``source/data/`` or ``source/default/``), string columns
                     ``short_book_title``, ``publication_date``, ``url``, ``text``; the book id is
                     the last number of ``url`` (``.../ebooks/10146``), as the official file names
    "tfds"           tensorflow-datasets' ``pg19/<version>/pg19-{train,validation,test}.tfrecord-*``
                     (in ``source`` or up to three levels below), read without TensorFlow. Features
                     (tensorflow/datasets ``pg19_dataset_builder.py``, version 0.1.1): ``book_text``
                     (text), ``book_id`` (int32), ``book_title``, ``publication_date``, ``book_link``
                     (strings). TFDS stores ``f.read().strip()`` of each book, so its books lack the
                     official files' trailing newline: the store equals the official layout's only
                     for books without leading / trailing whitespace.

Every book is read as UTF-8 text and tokenized whole: content = the tokenizer's ids, name = the
book id, num_words = ``count_words(text)`` (whitespace words, see ``repro.data.text``), num_bytes =
the file size. Tokenizer (preset data options): ``tokenizer`` = "sentencepiece" (default; trained on
the train books with ``vocab_size`` 32000 as the paper, ``seed``, and ``max_train_bytes`` bounding
the SentencePiece input to a seeded sample of the 11 GB of books), "bytes", or the path of a user
SentencePiece ``.model``.

Demo (``demo``): Jane Austen's six novels, from Debian's ``r-cran-janeaustenr`` package, written in
the PG-19 layout (``repro/data/demos/pg19.py``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repro.data.formats import parquet
from repro.data.formats.stage import relabel, staging_dir
from repro.data.formats.tfrecord import example_features, find_tfds_dir, tfrecord_records
from repro.data.source import SPLITS, DataError, RawDoc, RawFormat, SourceFile, Tokenizer
from repro.data.text import count_words, fit_text_tokenizer, load_text_tokenizer, normalize_text

HUB_COLUMNS = ("short_book_title", "publication_date", "url", "text")
HUB_SCHEMA = "PG-19's Hub parquet has string columns " + ", ".join(HUB_COLUMNS)
HUB_DIRS = ("", "data", "default")  # emozilla/pg19 keeps its shards in data/; the conversion in default/
TFDS_PATTERN = "pg19-{split}.tfrecord-*"
TFDS_FEATURES = ("book_text", "book_id", "book_title", "publication_date", "book_link")


# ------------------------------------------------------------------------------------------------
# The format


def _book_id(path: Path) -> str:
    return path.stem


def _id_key(book_id: str) -> tuple[int, int, str]:
    return (0, int(book_id), "") if book_id.isdigit() else (1, 0, book_id)


class PG19Format(RawFormat):
    section = "pg19"

    def _layout(self, source: Path) -> tuple[str, Path, dict[str, list[Path]] | None]:
        """(variant, folder, parquet files per split or None) of ``source``."""
        source = Path(source)
        if (source / "metadata.csv").is_file() or any((source / "train").glob("*.txt")):
            return "default", source, None
        for sub in HUB_DIRS:
            found = parquet.split_files(source / sub) if (source / sub).is_dir() else None
            if found is not None:
                return ("hub" if found[0] == "hub" else "hub-converted"), source / sub, found[1]
        d = find_tfds_dir(source, TFDS_PATTERN.format(split="train"))
        if d is not None:
            return "tfds", d, None
        raise DataError(
            f"{source}: no PG-19 layout found: looked for metadata.csv with train/, validation/, test/ (official), "
            "train-*.parquet or train/*.parquet in it, data/ or default/ (Hugging Face Hub), and "
            f"{TFDS_PATTERN.format(split='train')} up to three levels down (tensorflow-datasets)"
        )

    def variant(self, source: Path) -> str:
        return self._layout(source)[0]

    def read_metadata(self, source: Path) -> dict[str, list[str]]:
        """book_id -> its metadata.csv row (3 or 4 columns, no header row)."""
        path = Path(source) / "metadata.csv"
        if not path.is_file():
            raise DataError(f"{path} is missing (the PG-19 layout has metadata.csv, train/, validation/, test/)")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        rows: dict[str, list[str]] = {}
        for i, row in enumerate(csv.reader(io.StringIO(text, newline=""))):
            if not row:
                continue
            if i == 0 and row[0].strip().lower() == "book_id":
                continue  # tolerate a header row (the official file has none)
            if len(row) not in (3, 4) or not row[0].strip():
                raise DataError(f"{path}:{i + 1}: expected 3 or 4 columns (book_id, title, date[, link])")
            book_id = row[0].strip()
            if book_id in rows:
                raise DataError(f"{path}:{i + 1}: book {book_id} is listed twice")
            rows[book_id] = row
        return rows

    def scan(self, source: Path) -> dict[str, list[SourceFile]]:
        variant, d, shards = self._layout(source)
        if variant != "default":
            return self._stage(variant, d, shards)
        source = Path(source)
        meta = self.read_metadata(source)
        out: dict[str, list[SourceFile]] = {}
        seen: set[str] = set()
        for split in SPLITS:
            d = source / split
            if not d.is_dir():
                raise DataError(f"{d} is missing (the PG-19 layout has train/, validation/, test/ folders)")
            books = sorted((p for p in d.glob("*.txt") if not p.name.startswith(".")), key=lambda p: _id_key(p.stem))
            for p in books:
                if _book_id(p) not in meta:
                    raise DataError(f"{p}: book {_book_id(p)} is not listed in {source / 'metadata.csv'}")
                seen.add(_book_id(p))
            out[split] = [SourceFile(split, p) for p in books]
        for book_id in meta:
            if book_id not in seen:
                raise DataError(
                    f"{source / 'metadata.csv'}: book {book_id} has no {book_id}.txt in train/, validation/ or test/"
                )
        return out

    def _stage(self, variant: str, d: Path, shards: dict[str, list[Path]] | None) -> dict[str, list[SourceFile]]:
        """Hub parquet rows / TFDS examples written as the official layout in a staging folder,
        scanned as it; each book labelled by the file (and row or record) it came from."""
        out = staging_dir("pg19")
        rows, origin, split_of = [], {}, {}
        for split in SPLITS:
            (out / split).mkdir()
            books = self._hub_books(d, split, shards) if shards is not None else self._tfds_books(d, split)
            n = 0
            for label, book_id, meta, text in books:
                if book_id in split_of:
                    raise DataError(f"{label}: book {book_id} is already in the {split_of[book_id]} split")
                split_of[book_id] = split
                dest = out / split / f"{book_id}.txt"
                with open(dest, "w", encoding="utf-8", newline="") as fh:
                    fh.write(text)
                origin[dest] = label
                rows.append((_id_key(book_id), [book_id, *meta]))
                n += 1
            if not n:
                raise DataError(f"{d}: the {split} split has no books")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(r for _, r in sorted(rows))
        (out / "metadata.csv").write_text(buf.getvalue(), encoding="utf-8")
        return relabel(self.scan(out), origin)

    @staticmethod
    def _hub_books(d: Path, split: str, shards: dict[str, list[Path]]) -> Iterator[tuple[str, str, list[str], str]]:
        if not shards.get(split):
            raise DataError(f"{d}: no {split} parquet file ({split}-*.parquet or {split}/*.parquet)")
        for p in shards[split]:
            for i, row in parquet.rows(p, HUB_COLUMNS, HUB_SCHEMA):
                m = re.search(r"(\d+)\D*$", row["url"])
                if m is None:
                    raise DataError(f"{p}: row {i}: no book id at the end of its url '{row['url'][:80]}'")
                book_id = str(int(m.group(1)))
                meta = [row["short_book_title"], row["publication_date"], row["url"]]
                yield f"{p}:{book_id}", book_id, meta, row["text"]

    @staticmethod
    def _tfds_books(d: Path, split: str) -> Iterator[tuple[str, str, list[str], str]]:
        files = sorted(p for p in d.glob(TFDS_PATTERN.format(split=split)) if p.is_file())
        if not files:
            raise DataError(f"{d}: no {TFDS_PATTERN.format(split=split)} shards (the {split} split)")
        for p in files:
            for i, rec in enumerate(tfrecord_records(p)):
                label = f"{p}#{i}"
                try:
                    feats = example_features(rec)
                except ValueError as e:
                    raise DataError(f"{label}: not a tf.train.Example ({e})") from None
                missing = [k for k in TFDS_FEATURES if len(feats.get(k, [])) != 1]
                if missing:
                    have = ", ".join(feats) or "none"
                    raise DataError(f"{label}: no single '{missing[0]}' feature (TFDS pg19 has "
                                    f"{', '.join(TFDS_FEATURES)}; this record has {have})")  # fmt: skip
                book_id = feats["book_id"][0]
                strings = {}
                for k in ("book_text", "book_title", "publication_date", "book_link"):
                    v = feats[k][0]
                    try:
                        strings[k] = v.decode("utf-8") if isinstance(v, bytes) else None
                    except UnicodeDecodeError as e:
                        raise DataError(f"{label}: feature '{k}' is not UTF-8 text ({e.reason})") from None
                    if strings[k] is None:
                        raise DataError(f"{label}: feature '{k}' is not a string")
                if not isinstance(book_id, int) or book_id < 0:
                    raise DataError(f"{label}: feature 'book_id' is not a book number ({book_id!r})")
                meta = [strings["book_title"], strings["publication_date"], strings["book_link"]]
                yield f"{p}:{book_id}", str(book_id), meta, strings["book_text"]

    def fit_tokenizer(self, train_files: list[SourceFile], out_dir: Path, options: dict[str, Any]) -> Tokenizer:
        return fit_text_tokenizer(
            str(options.get("tokenizer", "sentencepiece")), [f.path for f in train_files], out_dir, options
        )

    def load_tokenizer(self, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
        return load_text_tokenizer(corpus_dir, manifest)

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        try:
            raw = f.path.read_bytes()
        except OSError as e:
            raise DataError(f"{f.label}: cannot read ({e.strerror})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{f.label}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not text.strip():
            raise DataError(f"{f.label}: empty book")
        text, normalized = normalize_text(text)  # a BOM or CRLF line ends must not change the tokens
        content = tokenizer.encode(text)  # type: ignore[attr-defined]
        yield RawDoc(content=content, name=_book_id(f.path), num_words=count_words(text), num_bytes=len(raw),
                     normalized=normalized)  # fmt: skip

    def official_documents(self, variant: str) -> dict[str, int]:
        return {"train": 28_602, "validation": 50, "test": 100}  # github.com/google-deepmind/pg19

    def demo(self, out: Path) -> Path:
        """Austen's novels in the PG-19 layout under ``out`` (``repro.data.demos.pg19``); returns
        ``out``. DataError naming the setup command when the .deb is absent."""
        from repro.data.demos.pg19 import write_demo

        return write_demo(Path(out))


FORMAT = PG19Format()
