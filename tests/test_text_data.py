"""Text data: tokenizers, word counting, the PG-19 and WikiText-103 raw formats and their demos."""

import csv
import hashlib
import io
import math
import struct
import zlib
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from repro.data.demos.pg19 import demo_source_dirs, find_austen_deb
from repro.data.demos.wikitext103 import gensim_enwiki_path, strip_markup, wikipedia_pages, wikitext_tokenize
from repro.data.formats.rdata import read_lazyload_db, read_rds
from repro.data.pg19 import FORMAT as PG19
from repro.data.source import DataError, SourceFile
from repro.data.text import (
    ByteTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
    count_words,
    fit_text_tokenizer,
    load_text_tokenizer,
    sample_lines,
)
from repro.data.wikitext103 import FORMAT as WT103
from repro.data.wikitext103 import article_title
from repro.eval.metrics import perplexity, word_perplexity


def sha256(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def wiki_text() -> str:
    """Real English text: the first ten articles of gensim's Wikipedia excerpt, markup stripped."""
    pages = islice(wikipedia_pages(gensim_enwiki_path()), 10)
    return "\n".join(s for _, markup in pages for _, s in strip_markup(markup)) + "\n"


def manifest_of(tok, corpus: Path) -> dict:
    return {
        "tokenizer": {
            "identity": tok.identity,
            "hash": tok.hash(),
            "vocab_size": tok.vocab_size,
            "files": [str(Path(f).relative_to(corpus)) for f in tok.files()],
        }
    }


# ------------------------------------------------------------------------------------------------
# Word counting and word-level perplexity


def test_count_words_by_hand():
    assert count_words("") == 0 and count_words("", eos_per_line=True) == 0
    assert count_words("one") == 1 and count_words("one", eos_per_line=True) == 2  # last line without \n
    assert count_words("x\ty  z\n") == 3
    # 3 lines (" a b", "", " c "), 3 words: PG-19 counts 3, WikiText 3 + 3 <eos>
    assert count_words(" a b\n\n c \n") == 3
    assert count_words(" a b\n\n c \n", eos_per_line=True) == 6
    # a WikiText-103 snippet: heading tokens "=" are words too; blank lines are " "
    snippet = " \n = Valkyria = \n \n The game 's theme . \n"
    assert count_words(snippet) == 3 + 5
    assert count_words(snippet, eos_per_line=True) == 3 + 5 + 4


def test_word_perplexity_uses_word_counts():
    text = " the cat sat \n \n on the mat . \n"
    W = count_words(text, eos_per_line=True)
    assert W == 3 + 4 + 3
    # Word tokens: one token per word, so word and token perplexity agree.
    tok = WordTokenizer([*"<eos> <unk> the cat sat on mat .".split()])
    n = len(tok.encode(text))
    assert n == W
    total = 2.5 * n
    assert word_perplexity(total, W, n, 0.0)[0] == pytest.approx(perplexity(total / n, 0.0)[0])
    # Bytes: 0.5 nats over each of 31 byte tokens is exp(15.5 / 10) per word = ppl_token ** (n / W).
    nb = len(ByteTokenizer().encode(text))
    assert nb == 14 + 2 + 15
    total = 0.5 * nb
    assert word_perplexity(total, W, nb, 0.0)[0] == pytest.approx(math.exp(15.5 / 10))
    assert word_perplexity(total, W, nb, 0.0)[0] == pytest.approx(math.exp(0.5) ** (31 / 10))


# ------------------------------------------------------------------------------------------------
# Tokenizers


def test_byte_tokenizer():
    tok = ByteTokenizer()
    ids = tok.encode("aé\n")
    np.testing.assert_array_equal(ids, [97, 195, 169, 10])
    assert tok.decode(ids) == "aé\n" and tok.vocab_size == 256 and tok.identity == "utf8-bytes:256"


def test_sentencepiece_is_reproducible_and_round_trips(tmp_path, wiki_text):
    text = wiki_text[:150_000]
    a = SentencePieceTokenizer.train([text], tmp_path / "a", vocab_size=512, seed=7)
    b = SentencePieceTokenizer.train([text], tmp_path / "b", vocab_size=512, seed=7)
    assert a.path == tmp_path / "a" / "sentencepiece.model"
    assert sha256(a.path) == sha256(b.path)
    assert a.vocab_size == 512 and a.identity == "sentencepiece:unigram:512"
    assert (a._sp.bos_id(), a._sp.eos_id(), a._sp.pad_id(), a._sp.unk_id()) == (-1, -1, -1, 0)
    ids = a.encode(text)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 512
    assert len(ids) < len(text.encode())  # it learned pieces longer than a byte
    assert a.decode(ids) == text
    # Whitespace, newlines, CRLF, tabs and characters never seen in training survive (byte fallback).
    odd = "  two  spaces\n\n\tTab\r\nünïcødé £ 日本 😀 "
    assert a.decode(a.encode(odd)) == odd
    # load() of the written model is the same tokenizer
    c = SentencePieceTokenizer.load(a.path)
    np.testing.assert_array_equal(c.encode(text), ids)
    with pytest.raises(DataError, match="too small for 100000 SentencePiece pieces") as e:
        SentencePieceTokenizer.train([text[:2000]], tmp_path / "c", vocab_size=100000)
    assert e.value.asked == 100000 and 256 < e.value.limit < 100000  # repro.data.text.VocabularyTooLarge


def test_sample_lines_is_a_seeded_sample_of_whole_lines(tmp_path):
    rng = np.random.default_rng(0)
    paths, all_lines = [], []
    for k in range(3):
        lines = [f"file{k} line{i} " + "x" * int(rng.integers(0, 300)) for i in range(600)]
        all_lines += lines
        p = tmp_path / f"{k}.txt"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    total = sum(p.stat().st_size for p in paths)
    assert list(sample_lines(paths, None, 0)) == all_lines
    assert list(sample_lines(paths, total, 0)) == all_lines
    s1, s2, s3 = (list(sample_lines(paths, 40_000, seed)) for seed in (1, 1, 2))
    assert s1 == s2 and s1 != s3
    assert set(s1) <= set(all_lines) and len(set(s1)) == len(s1)  # whole lines, none twice
    n = sum(len(line) + 1 for line in s1)
    assert 35_000 < n < 60_000  # 3 blocks of 16 KiB, give or take the lines at their edges


def test_sentencepiece_bounded_training_input_is_reproducible(tmp_path, wiki_text):
    p = tmp_path / "big.txt"
    p.write_text(wiki_text)
    a = SentencePieceTokenizer.train([p], tmp_path / "a", 512, seed=3, max_train_bytes=100_000)
    b = SentencePieceTokenizer.train([p], tmp_path / "b", 512, seed=3, max_train_bytes=100_000)
    assert sha256(a.path) == sha256(b.path)


def test_word_tokenizer(tmp_path):
    tok = WordTokenizer.train([" b a \n \n c b <unk> \n", "b"], tmp_path)
    # <eos> first, then by count (b: 3) then lexicographically (<unk> < a < c, each once)
    assert tok.words == ["<eos>", "b", "<unk>", "a", "c"]
    assert tok.counts == [4, 3, 1, 1, 1] and tok.vocab_size == 5 and tok.identity == "word:5"
    ids = tok.encode(" a zebra \n\n b")
    np.testing.assert_array_equal(ids, [3, 2, 0, 0, 1, 0])  # zebra -> <unk>; <eos> per line
    assert ids.dtype == np.int32
    assert tok.decode(ids) == "a <unk>\n\nb\n"
    loaded = WordTokenizer.load(tmp_path / "vocab.txt")
    assert loaded.words == tok.words and loaded.hash() == tok.hash()
    # <unk> is added when the training text has none; min_count drops rare words
    t2 = WordTokenizer.train(["x x y\n"], tmp_path / "t2", min_count=2)
    assert t2.words == ["<eos>", "x", "<unk>"]
    np.testing.assert_array_equal(t2.encode("y x"), [2, 1, 0])
    (tmp_path / "bad.txt").write_text("<eos>\t1\nno-count\n")
    with pytest.raises(DataError, match="bad.txt:2"):
        WordTokenizer.load(tmp_path / "bad.txt")


def test_fit_and_load_text_tokenizer(tmp_path, wiki_text):
    corpus = tmp_path / "corpus"
    train = tmp_path / "train.txt"
    train.write_text(wiki_text[:200_000])
    sp = fit_text_tokenizer("sentencepiece", [train], corpus / "tokenizer", {"vocab_size": 512, "seed": 0})
    again = load_text_tokenizer(corpus, manifest_of(sp, corpus))
    assert again.identity == sp.identity and again.hash() == sp.hash()
    # a user's .model is copied into the corpus
    user = fit_text_tokenizer(str(sp.path), [], tmp_path / "user", {})
    assert user.path == tmp_path / "user" / "sentencepiece.model" and sha256(user.path) == sha256(sp.path)
    word = fit_text_tokenizer("word", [train], corpus / "tokenizer", {})
    assert load_text_tokenizer(corpus, manifest_of(word, corpus)).words == word.words
    assert isinstance(load_text_tokenizer(corpus, manifest_of(ByteTokenizer(), corpus)), ByteTokenizer)
    m = manifest_of(word, corpus)
    (corpus / "tokenizer" / "vocab.txt").write_text("<eos>\t1\n<unk>\t1\n")
    with pytest.raises(DataError, match="do not match the manifest"):
        load_text_tokenizer(corpus, m)
    with pytest.raises(DataError, match="unknown tokenizer 'wordpiece'"):
        fit_text_tokenizer("wordpiece", [train], corpus, {})
    with pytest.raises(DataError, match="missing.model does not exist"):
        fit_text_tokenizer(str(tmp_path / "missing.model"), [train], corpus, {})


# ------------------------------------------------------------------------------------------------
# R serialization reader (the PG-19 demo's source format)


def _xdr(obj) -> bytes:
    """A tiny R XDR serializer for tests: str list -> STRSXP (None = NA), int list -> INTSXP,
    dict -> named VECSXP."""

    def i(v):
        return struct.pack(">i", v)

    def charsxp(s):
        if s is None:
            return i(9) + i(-1)
        b = s.encode("utf-8")
        return i(9 | (8 << 12)) + i(len(b)) + b  # UTF8 level bit

    def item(o):
        if isinstance(o, dict):
            body = i(19 | (1 << 9)) + i(len(o)) + b"".join(item(v) for v in o.values())
            # attributes pairlist: tag "names" (SYMSXP), value STRSXP, then NILVALUE
            names = i(2 | (1 << 10)) + i(1) + charsxp("names") + item(list(o)) + i(254)
            return body + names
        if all(isinstance(x, int) for x in o) and o:
            return i(13) + i(len(o)) + b"".join(i(x) for x in o)
        return i(16) + i(len(o)) + b"".join(charsxp(x) for x in o)

    return b"X\n" + i(3) + i(0x040201) + i(0x030500) + i(5) + b"UTF-8" + item(obj)


def test_read_rds_and_lazyload_db():
    v = read_rds(_xdr(["EMMA", "", None, "é"]))
    assert v.kind == "character" and v.values == ["EMMA", "", None, "é"]
    import gzip

    books = {"emma": ["EMMA", "line"], "persuasion": ["Persuasion"]}
    blobs = [_xdr(b) for b in books.values()]
    rdb, locs = b"", []
    for blob in blobs:
        entry = struct.pack(">I", len(blob)) + zlib.compress(blob)
        locs.append([len(rdb), len(entry)])
        rdb += entry
    index = {"variables": dict(zip(books, locs, strict=True)), "references": [], "compressed": [1]}
    objects = read_lazyload_db(gzip.compress(_xdr(index)), rdb, "Rdata")
    assert {k: o.values for k, o in objects.items()} == books
    with pytest.raises(DataError, match="not R XDR"):
        read_rds(b"RDX2\n")
    with pytest.raises(DataError, match="truncated"):
        read_rds(_xdr(["abc"])[:-2])


# ------------------------------------------------------------------------------------------------
# PG-19


def make_pg19(root: Path, books: dict[str, dict[str, str]], extra_rows=()) -> Path:
    rows = []
    for split in ("train", "validation", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for book_id, text in books.get(split, {}).items():
            (root / split / f"{book_id}.txt").write_text(text)
            rows.append([book_id, f"Title {book_id}", "1900"] + ([f"link/{book_id}"] if int(book_id) % 2 else []))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows + list(extra_rows))
    (root / "metadata.csv").write_text(buf.getvalue())
    return root


TINY = {
    "train": {"10": "It was a dark\nand stormy night.\n", "9": "Call me Ishmael.\n"},
    "validation": {"3": "Once upon a time\n"},
    "test": {"4": "The end, \u00e9t\u00e9.\n"},
}


def test_pg19_scan_and_read(tmp_path):
    src = make_pg19(tmp_path, TINY)
    files = PG19.scan(src)
    assert {k: [f.path.name for f in v] for k, v in files.items()} == {
        "train": ["9.txt", "10.txt"],  # numeric order of book ids
        "validation": ["3.txt"],
        "test": ["4.txt"],
    }
    tok = PG19.fit_tokenizer(files["train"], tmp_path / "tok", {"tokenizer": "bytes"})
    docs = [d for f in files["train"] + files["test"] for d in PG19.read(f, tok)]
    assert [(d.name, d.num_words, d.num_bytes) for d in docs] == [("9", 3, 17), ("10", 7, 32), ("4", 3, 16)]
    assert tok.decode(docs[2].content) == TINY["test"]["4"]
    assert PG19.section == "pg19" and PG19.variant(src) == "default"
    assert PG19.load_tokenizer(tmp_path, manifest_of(tok, tmp_path)).identity == "utf8-bytes:256"


def test_pg19_bad_inputs(tmp_path):
    def fresh(name, books=TINY, extra_rows=()):
        return make_pg19(tmp_path / name, books, extra_rows)

    src = fresh("nosplit")
    for f in (src / "test").iterdir():
        f.unlink()
    (src / "test").rmdir()
    with pytest.raises(DataError, match=r"nosplit/test is missing"):
        PG19.scan(src)

    src = fresh("nometa")
    (src / "metadata.csv").unlink()
    with pytest.raises(DataError, match=r"nometa/metadata.csv is missing"):
        PG19.scan(src)

    src = fresh("orphan")
    (src / "train" / "77.txt").write_text("not listed\n")
    with pytest.raises(DataError, match=r"orphan/train/77.txt: book 77 is not listed in .*metadata.csv"):
        PG19.scan(src)

    src = fresh("ghost", extra_rows=[["55", "Ghost", "1901"]])
    with pytest.raises(DataError, match=r"ghost/metadata.csv: book 55 has no 55.txt"):
        PG19.scan(src)

    src = fresh("columns", extra_rows=[["56", "Two columns"]])
    with pytest.raises(DataError, match=r"columns/metadata.csv:5: expected 3 or 4 columns"):
        PG19.scan(src)

    src = fresh("empty", {**TINY, "validation": {"3": " \n\n"}})
    f = PG19.scan(src)["validation"][0]
    with pytest.raises(DataError, match=r"empty/validation/3.txt: empty book"):
        list(PG19.read(f, ByteTokenizer()))

    src = fresh("latin1")
    (src / "test" / "4.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1/test/4.txt: not UTF-8"):
        list(PG19.read(SourceFile("test", src / "test" / "4.txt"), ByteTokenizer()))


def test_pg19_demo_without_the_deb_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setattr("repro.data.demos.pg19.find_austen_deb", lambda: None)
    monkeypatch.setattr("repro.data.demos.pg19.INSTALLED_RDATA", tmp_path / "none" / "Rdata")
    with pytest.raises(DataError, match="make setup"):
        PG19.demo(tmp_path / "demo")


@pytest.fixture(scope="module")
def austen(tmp_path_factory) -> Path:
    if find_austen_deb() is None:
        pytest.skip(
            "Debian's r-cran-janeaustenr .deb is not in "
            + ", ".join(map(str, demo_source_dirs()))
            + ": run `make setup` or `bash scripts/fetch_demo_sources.sh`"
        )
    return PG19.demo(tmp_path_factory.mktemp("pg19-demo"))


def test_pg19_demo_is_austen_in_the_official_layout(austen):
    rows = list(csv.reader((austen / "metadata.csv").open()))
    assert [r[:3] for r in rows] == [
        ["105", "Persuasion", "1818"],
        ["121", "Northanger Abbey", "1818"],
        ["141", "Mansfield Park", "1814"],
        ["158", "Emma", "1815"],
        ["161", "Sense and Sensibility", "1811"],
        ["1342", "Pride and Prejudice", "1813"],
    ]
    files = PG19.scan(austen)
    assert {k: [f.path.stem for f in v] for k, v in files.items()} == {
        "train": ["141", "158", "161", "1342"],
        "validation": ["105"],
        "test": ["121"],
    }
    tok = ByteTokenizer()
    (val,) = PG19.read(files["validation"][0], tok)
    assert (val.num_words, val.num_bytes) == (83_283, 466_854)  # Persuasion
    text = tok.decode(val.content)
    assert text.startswith("Persuasion\n\n\nby\n\nJane Austen\n\n(1818)\n") and "Anne Elliot" in text
    sizes = {f.path.stem: f.path.stat().st_size for v in files.values() for f in v}
    assert 4_000_000 < sum(sizes.values()) < 4_100_000 and min(sizes.values()) > 400_000


def test_pg19_demo_sentencepiece(austen, tmp_path):
    files = PG19.scan(austen)
    opts = {"tokenizer": "sentencepiece", "vocab_size": 512, "seed": 0, "max_train_bytes": 150_000}
    a = PG19.fit_tokenizer(files["train"], tmp_path / "a", opts)
    b = PG19.fit_tokenizer(files["train"], tmp_path / "b", opts)
    assert sha256(a.path) == sha256(b.path)
    (doc,) = PG19.read(files["test"][0], a)
    assert doc.name == "121" and doc.num_words == 77_141
    assert a.decode(doc.content) == files["test"][0].path.read_text()


# ------------------------------------------------------------------------------------------------
# WikiText-103

SNIPPET = {
    "train": " \n = Alpha = \n \n The cat sat . \n \n = = Beta = = \n \n A dog . \n = Gamma Ray = \n \n <unk> cat \n",
    "valid": " = Delta = \n a zebra \n",
    "test": " = Eps = \n cat \n",
}


def make_wt103(root: Path, files=SNIPPET, ext="tokens") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stem, text in files.items():
        (root / f"wiki.{stem}.{ext}").write_text(text)
    return root


def test_article_title():
    assert article_title(" = Valkyria Chronicles III = \n") == "Valkyria Chronicles III"
    assert article_title(" = = Gameplay = = \n") is None
    assert article_title(" = = = Deep = = = ") is None
    assert article_title(" The score was 2 = 2 . ") is None
    assert article_title(" = A = ") == "A"


def test_wikitext_articles_and_counts(tmp_path):
    src = make_wt103(tmp_path / "wikitext-103")
    assert WT103.variant(tmp_path) == "tokens"
    files = WT103.scan(tmp_path)
    assert {k: [f.path.name for f in v] for k, v in files.items()} == {
        "train": ["wiki.train.tokens"],
        "validation": ["wiki.valid.tokens"],
        "test": ["wiki.test.tokens"],
    }
    tok = WT103.fit_tokenizer(files["train"], tmp_path / "tok", {})
    assert isinstance(tok, WordTokenizer)
    docs = list(WT103.read(files["train"][0], tok))
    # Alpha: 8 lines (the blank line before its heading included) holding "= Alpha =", "The cat
    # sat .", "= = Beta = =", "A dog .": 15 words + 8 <eos>; Gamma Ray: 3 lines, 6 words + 3 <eos>.
    assert [(d.name, d.num_words) for d in docs] == [("Alpha", 23), ("Gamma Ray", 9)]
    assert [len(d.content) for d in docs] == [23, 9]  # word tokens: one id per counted word
    assert sum(d.num_bytes for d in docs) == src.joinpath("wiki.train.tokens").stat().st_size
    assert tok.decode(docs[1].content) == "= Gamma Ray =\n\n<unk> cat\n"
    (val,) = WT103.read(files["validation"][0], tok)
    assert val.name == "Delta" and tok.decode(val.content) == "= <unk> =\n<unk> <unk>\n"  # unseen words
    assert WT103.evaluate_eos is False and WT103.section == "wikitext103"


def test_wikitext_raw_variant_defaults_to_sentencepiece(tmp_path, wiki_text):
    text = " = Wiki = \n" + wiki_text[:60_000]
    make_wt103(tmp_path / "wikitext-103-raw", {"train": text, "valid": text, "test": text}, ext="raw")
    assert WT103.variant(tmp_path) == "raw"
    files = WT103.scan(tmp_path)
    tok = WT103.fit_tokenizer(files["train"], tmp_path / "tok", {"vocab_size": 512})
    assert isinstance(tok, SentencePieceTokenizer)
    (doc,) = WT103.read(files["test"][0], tok)
    assert doc.name == "Wiki" and tok.decode(doc.content) == text
    assert isinstance(WT103.fit_tokenizer(files["train"], tmp_path / "b", {"tokenizer": "bytes"}), ByteTokenizer)


def test_wikitext_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no wiki.train.tokens or wiki.train.raw"):
        WT103.scan(tmp_path)
    src = make_wt103(tmp_path / "a", {"train": SNIPPET["train"], "test": SNIPPET["test"]})
    with pytest.raises(DataError, match=r"a/wiki.valid.tokens is missing"):
        WT103.scan(src)
    src = make_wt103(tmp_path / "b", {**SNIPPET, "test": " = = Only a section = = \n text \n"})
    f = WT103.scan(src)["test"][0]
    with pytest.raises(DataError, match=r"b/wiki.test.tokens: no article heading"):
        list(WT103.read(f, ByteTokenizer()))


def test_wikitext_tokenize_and_strip_markup():
    assert wikitext_tokenize('It\'s a role-playing game (1,000.5 km), lit. U.S. "x"...') == (
        'It \'s a role @-@ playing game ( 1 @,@ 000 @.@ 5 km ) , lit . U.S. " x " ...'
    )
    markup = (
        "{{Infobox|a={{b}}}}'''Albedo''' ({{IPA|x}}) is the [[diffuse reflection|reflectivity]] of a "
        "[[surface]].<ref>cite</ref>\n[[File:A.png|thumb|A [[caption]]]]\n\n== Terrestrial ==\n"
        "{| class=x\n| a || b\n|}\n* An item\nText <b>bold</b> &amp; 15&nbsp;°C.\n== References ==\n{{reflist}}\n"
        "[[Category:Optics]]\n"
    )
    assert strip_markup(markup) == [
        (0, "Albedo is the reflectivity of a surface."),
        (2, "Terrestrial"),
        (0, "An item"),
        (0, "Text bold & 15 °C."),
    ]


@pytest.fixture(scope="module")
def wiki_demo(tmp_path_factory) -> Path:
    return WT103.demo(tmp_path_factory.mktemp("wt103-demo"))


def test_wikitext_demo_from_gensim(wiki_demo):
    assert wiki_demo.name == "wikitext-103"
    files = WT103.scan(wiki_demo.parent)
    tok = WT103.fit_tokenizer(files["train"], wiki_demo.parent / "tok", {})
    stats = {}
    for split, (f,) in files.items():
        text = f.path.read_text()
        assert text.startswith(" \n = ") and "<unk>" in text
        for bad in ("[[", "]]", "{{", "}}", "<ref", "&nbsp;", "http"):
            assert bad not in text, (split, bad)
        docs = list(WT103.read(f, tok))
        stats[split] = (len(docs), sum(d.num_words for d in docs), sum(d.num_bytes for d in docs))
        assert sum(d.num_words for d in docs) == count_words(text, eos_per_line=True)
        if split == "train":
            assert not any((d.content == tok.unk_id).all() for d in docs)
        else:  # closed vocabulary: only title words can be unseen in train
            body = [w for line in text.split("\n") if not article_title(line) for w in line.split()]
            assert all(w in tok.index for w in body)
    assert [stats[s][0] for s in ("train", "validation", "test")] == [90, 8, 8]
    assert 350_000 < stats["train"][1] < 550_000 and 1_800_000 < stats["train"][2] < 2_900_000
    assert min(stats["validation"][1], stats["test"][1]) > 20_000
    assert 5_000 < tok.vocab_size < 30_000
