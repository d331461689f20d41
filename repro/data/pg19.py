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

Demo (``demo``): Jane Austen's six novels from Debian's ``r-cran-janeaustenr`` package (Project
Gutenberg texts with the licence header removed, the same cleaning as PG-19; texts public domain,
package MIT), read without R from the package's R data file and written in the PG-19 layout: four
novels train, *Persuasion* validation, *Northanger Abbey* test. The ``.deb`` is fetched once at
setup (``make setup`` runs ``scripts/fetch_demo_sources.sh``), never at run time.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import os
import re
import struct
import sys
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.data.formats import parquet
from repro.data.formats.stage import relabel, staging_dir
from repro.data.formats.tfrecord import example_features, find_tfds_dir, tfrecord_records
from repro.data.source import SPLITS, DataError, RawDoc, RawFormat, SourceFile, Tokenizer
from repro.data.text import count_words, fit_text_tokenizer, load_text_tokenizer, normalize_text

DEMO_ENV = "REPRO_DEMO_SOURCES"
DEMO_DEB_GLOB = "r-cran-janeaustenr_*.deb"
FETCH_COMMAND = "make setup (or: bash scripts/fetch_demo_sources.sh)"
_RDATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
INSTALLED_RDATA = Path("/") / _RDATA  # where `apt-get install r-cran-janeaustenr` puts it

# janeaustenr object -> (Project Gutenberg ebook number = PG-19 book id, title, year on the title page)
AUSTEN_BOOKS = {
    "sensesensibility": (161, "Sense and Sensibility", 1811),
    "prideprejudice": (1342, "Pride and Prejudice", 1813),
    "mansfieldpark": (141, "Mansfield Park", 1814),
    "emma": (158, "Emma", 1815),
    "northangerabbey": (121, "Northanger Abbey", 1818),
    "persuasion": (105, "Persuasion", 1818),
}
DEMO_SPLITS = {"validation": ("persuasion",), "test": ("northangerabbey",)}

HUB_COLUMNS = ("short_book_title", "publication_date", "url", "text")
HUB_SCHEMA = "PG-19's Hub parquet has string columns " + ", ".join(HUB_COLUMNS)
HUB_DIRS = ("", "data", "default")  # emozilla/pg19 keeps its shards in data/; the conversion in default/
TFDS_PATTERN = "pg19-{split}.tfrecord-*"
TFDS_FEATURES = ("book_text", "book_id", "book_title", "publication_date", "book_link")


# ------------------------------------------------------------------------------------------------
# A minimal reader of R's XDR serialization (RDS files, lazy-load databases)


@dataclass
class RValue:
    """An R vector: ``kind`` (character, integer, logical, double, list), values, attributes."""

    kind: str
    values: list[Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str] | None:
        n = self.attributes.get("names")
        return n.values if isinstance(n, RValue) else None


_VECTOR_KINDS = {10: "logical", 13: "integer", 14: "double", 16: "character", 19: "list", 20: "list"}
_SINGLETONS = {254, 253, 252, 251, 250, 249, 248, 247, 242, 241}  # NILVALUE, envs, MISSINGARG, ...


class _RReader:
    """Reads the subset of R serialization format 2/3 (XDR) that data files use: vectors,
    character strings, pairlists (attributes), symbols and references to them."""

    def __init__(self, data: bytes, label: str):
        self.b, self.p, self.label, self.refs = data, 0, label, []

    def _int(self) -> int:
        if self.p + 4 > len(self.b):
            raise DataError(f"{self.label}: truncated R data")
        (v,) = struct.unpack_from(">i", self.b, self.p)
        self.p += 4
        return v

    def _bytes(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.b):
            raise DataError(f"{self.label}: truncated R data")
        v = self.b[self.p : self.p + n]
        self.p += n
        return v

    def top(self) -> Any:
        if self._bytes(2) != b"X\n":
            raise DataError(f"{self.label}: not R XDR serialization data")
        version = self._int()
        self._int(), self._int()  # writer R version, minimal reader version
        if version == 3:
            self._bytes(self._int())  # native encoding name
        elif version != 2:
            raise DataError(f"{self.label}: unsupported R serialization version {version}")
        return self._item()

    def _item(self) -> Any:
        flags = self._int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t in _SINGLETONS:
            return None
        if t == 255:  # REFSXP: index in the upper bits (or the next int when 0)
            i = flags >> 8 or self._int()
            return self.refs[i - 1]
        if t == 1:  # SYMSXP: its name (a CHARSXP), remembered for later references
            name = self._item()
            self.refs.append(name)
            return name
        if t in (2, 6):  # LISTSXP / LANGSXP: (attributes) (tag) car cdr
            if has_attr:
                self._item()
            tag = self._item() if has_tag else None
            out = [(tag, self._item())]
            rest = self._item()
            return out + (rest if isinstance(rest, list) else [])
        if t == 9:  # CHARSXP: length (-1 = NA) and bytes; encoding in the levels bits
            n = self._int()
            if n == -1:
                return None
            raw = self._bytes(n)
            return raw.decode("latin-1" if (flags >> 12) & 4 else "utf-8", errors="replace")
        if t in _VECTOR_KINDS:
            n = self._int()
            if n == -1:  # long vector: 64-bit length as two ints
                n = (self._int() << 32) + self._int()
            if t in (16, 19, 20):
                values = [self._item() for _ in range(n)]
            elif t == 14:
                values = list(struct.unpack(f">{n}d", self._bytes(8 * n)))
            else:
                values = list(struct.unpack(f">{n}i", self._bytes(4 * n)))
            attrs = {}
            if has_attr:
                for tag, value in self._item() or []:
                    attrs[str(tag)] = value
            return RValue(_VECTOR_KINDS[t], values, attrs)
        raise DataError(f"{self.label}: unsupported R object type {t} in serialized data")


def _decompress(data: bytes, label: str) -> bytes:
    """gzip / bzip2 / xz / uncompressed R data, by magic number."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def read_rds(data: bytes, label: str = "RDS data") -> Any:
    """The object of an ``.rds`` file's bytes (or of a plain serialization)."""
    try:
        return _RReader(_decompress(data, label), label).top()
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(f"{label}: cannot decompress R data ({e})") from None


def read_lazyload_db(rdx: bytes, rdb: bytes, label: str) -> dict[str, Any]:
    """Every object of an R lazy-load database (``<name>.rdx`` index + ``<name>.rdb`` blobs):
    the index lists each variable's (offset, length) in the .rdb; each blob is a 4-byte
    big-endian uncompressed length and the compressed serialization (zlib, or for compression
    types 2/3 a type byte: '0' none, 'Z' zlib, '2' bzip2, 'X' xz)."""
    index = read_rds(rdx, label + ".rdx")
    if not isinstance(index, RValue) or index.kind != "list" or not index.names:
        raise DataError(f"{label}.rdx: not a lazy-load index")
    parts = dict(zip(index.names, index.values, strict=True))
    variables, compressed = parts.get("variables"), parts.get("compressed")
    if not isinstance(variables, RValue) or not variables.names:
        raise DataError(f"{label}.rdx: lazy-load index without variables")
    ctype = int(compressed.values[0]) if isinstance(compressed, RValue) and compressed.values else 1
    out = {}
    for name, loc in zip(variables.names, variables.values, strict=True):
        off, length = (int(v) for v in loc.values)
        blob = rdb[off : off + length]
        if len(blob) != length or length < 5:
            raise DataError(f"{label}.rdb: entry '{name}' lies outside the file")
        (size,) = struct.unpack(">I", blob[:4])
        body = blob[4:]
        try:
            if ctype in (2, 3):
                kind, body = body[:1], body[1:]
                raw = {b"0": lambda x: x, b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress}[kind](
                    body
                )
            else:
                raw = zlib.decompress(body)
        except (KeyError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            raise DataError(f"{label}.rdb: cannot decompress entry '{name}' ({e})") from None
        if len(raw) != size:
            raise DataError(f"{label}.rdb: entry '{name}' has {len(raw)} bytes, expected {size}")
        out[name] = _RReader(raw, f"{label}.rdb:{name}").top()
    return out


# ------------------------------------------------------------------------------------------------
# Demo sources


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def demo_source_dirs() -> list[Path]:
    """Where ``scripts/fetch_demo_sources.sh`` puts the demo's Debian packages, in search order:
    ``$REPRO_DEMO_SOURCES``, the running environment's ``share/repro-demo`` (``.venv`` after
    ``make setup``), and ``.venv/share/repro-demo`` of this checkout."""
    dirs = [Path(os.environ[DEMO_ENV])] if os.environ.get(DEMO_ENV) else []
    dirs += [Path(sys.prefix) / "share" / "repro-demo", _repo_root() / ".venv" / "share" / "repro-demo"]
    return list(dict.fromkeys(dirs))


def find_austen_deb() -> Path | None:
    """The newest ``r-cran-janeaustenr_*.deb`` in ``demo_source_dirs()``, or None."""
    for d in demo_source_dirs():
        debs = sorted(d.glob(DEMO_DEB_GLOB)) if d.is_dir() else []
        if debs:
            return debs[-1]
    return None


def _deb_members(deb: Path, wanted: set[str]) -> dict[str, bytes]:
    """Files of a Debian package's data archive (``ar`` container, ``data.tar.{xz,gz,bz2}``)."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise DataError(f"{deb}: not a Debian package (no ar header)")
    p, data = 8, None
    while p + 60 <= len(blob):
        name = blob[p : p + 16].decode("ascii", "replace").strip().rstrip("/")
        size = int(blob[p + 48 : p + 58].decode("ascii").strip())
        if name.startswith("data.tar"):
            data = blob[p + 60 : p + 60 + size]
            break
        p += 60 + size + (size & 1)
    if data is None:
        raise DataError(f"{deb}: no data.tar member")
    found = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for m in tar.getmembers():
                n = m.name.lstrip("./")
                if n in wanted and m.isfile():
                    found[n] = tar.extractfile(m).read()  # type: ignore[union-attr]
    except tarfile.TarError as e:
        raise DataError(f"{deb}: cannot read its data archive ({e})") from None
    missing = wanted - set(found)
    if missing:
        raise DataError(f"{deb}: missing {', '.join(sorted(missing))}")
    return found


def austen_novels(deb: Path | None = None) -> dict[str, list[str]]:
    """The six novels as lists of lines (janeaustenr object name -> lines; the first line is the
    title), from the ``.deb`` (default: ``find_austen_deb()``) or an installed R package."""
    if deb is None:
        deb = find_austen_deb()
    if deb is not None:
        files = _deb_members(deb, {_RDATA + ".rdx", _RDATA + ".rdb"})
        rdx, rdb, label = files[_RDATA + ".rdx"], files[_RDATA + ".rdb"], f"{deb}:{_RDATA}"
    elif INSTALLED_RDATA.with_suffix(".rdb").is_file():
        rdx = INSTALLED_RDATA.with_suffix(".rdx").read_bytes()
        rdb, label = INSTALLED_RDATA.with_suffix(".rdb").read_bytes(), str(INSTALLED_RDATA)
    else:
        where = ", ".join(str(d) for d in demo_source_dirs())
        raise DataError(
            f"the PG-19 demo needs Debian's r-cran-janeaustenr package ({DEMO_DEB_GLOB} in one of: {where}); "
            f"run {FETCH_COMMAND}"
        )
    objects = read_lazyload_db(rdx, rdb, label)
    books = {}
    for name in AUSTEN_BOOKS:
        v = objects.get(name)
        if not isinstance(v, RValue) or v.kind != "character" or not v.values:
            raise DataError(f"{label}: no character vector '{name}'")
        books[name] = ["" if line is None else line for line in v.values]
    return books


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
        """Austen's novels in the PG-19 layout under ``out`` (metadata.csv, train/, validation/,
        test/); returns ``out``. DataError naming the setup command when the .deb is absent."""
        out = Path(out)
        books = austen_novels()
        where = {name: split for split, names in DEMO_SPLITS.items() for name in names}
        rows = []
        for split in SPLITS:
            (out / split).mkdir(parents=True, exist_ok=True)
        for name, lines in books.items():
            book_id, title, year = AUSTEN_BOOKS[name]
            split = where.get(name, "train")
            (out / split / f"{book_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            rows.append((book_id, [str(book_id), title, str(year), f"https://www.gutenberg.org/ebooks/{book_id}"]))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for _, row in sorted(rows):
            w.writerow(row)
        (out / "metadata.csv").write_text(buf.getvalue(), encoding="utf-8")
        return out


FORMAT = PG19Format()
