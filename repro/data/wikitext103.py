"""WikiText-103 (Merity et al. 2016; paper Section 5.5): Wikipedia articles, one document per article.

Official layouts (the user's download), in ``source`` or in its ``wikitext-103/`` (``-raw/``) folder:

    variant "tokens"   wiki.train.tokens  wiki.valid.tokens  wiki.test.tokens   (<unk> for rare words)
    variant "raw"      wiki.train.raw     wiki.valid.raw     wiki.test.raw      (the same text, no <unk>)

The same files from the Hugging Face Hub (``Salesforce/wikitext``), config folder
``wikitext-103-v1/`` (tokens) or ``wikitext-103-raw-v1/`` (raw), in ``source`` or ``source`` itself:

    variant "hub:tokens" / "hub:raw"           train-0000N-of-0000M.parquet, validation-00000-of-00001.parquet,
                                               test-00000-of-00001.parquet (the dataset's main branch)
    variant "hub-converted:tokens" / ":raw"    {train,validation,test}/0000.parquet (refs/convert/parquet)

one string column ``text``, one row per line of the ``.tokens`` / ``.raw`` file. The rows are
written back as the official files (``repro.data.formats.stage``) and read as those, so the
prepared corpus is identical to the one prepared from the ``wiki.*`` files.

Each file is lines of space-separated tokens: `` = Title = `` starts an article, `` = = Section = = ``
(and deeper) a section, blank lines separate them, numbers are split as `` @,@ `` / `` @.@ `` and
hyphenated words as `` @-@ ``. ``read`` yields one document per article, from its top-level heading
line to the line before the next one (lines before the first heading belong to the first article,
so the articles of a split add up to the whole file): content = the tokenizer's ids, name = the
title, num_words = ``count_words(text, eos_per_line=True)`` (the standard WikiText-103 count: words
plus one ``<eos>`` per line), num_bytes = the article's UTF-8 bytes.

Tokenizer (preset data options ``tokenizer``): "word" (default for the tokens variant: whitespace
words + ``<eos>`` per line, vocabulary = every train word, the standard 267,735 ids), "sentencepiece"
(default for the raw variant; ``vocab_size`` 32000, ``seed``, ``max_train_bytes``), or "bytes". The
paper's own WikiText-103 tokenizer is not known (docs: paper.md section 1.5).

Demo (``demo``): the 106 real English Wikipedia articles (2016 dump excerpt, CC BY-SA 3.0) in the
gensim wheel's test data, read with bz2 + XML parsing (gensim is never imported), their markup
stripped, tokenized WikiText-style and written as ``wikitext-103/wiki.{train,valid,test}.tokens``.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import importlib.util
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repro.data.formats import parquet
from repro.data.formats.stage import relabel, staging_dir
from repro.data.source import DataError, RawDoc, RawFormat, SourceFile, Tokenizer
from repro.data.text import BOM, UNK_WORD, count_words, fit_text_tokenizer, load_text_tokenizer, normalize_text

# Official split names -> file stems.
SPLIT_FILES = {"train": "train", "validation": "valid", "test": "test"}
VARIANT_EXT = {"tokens": "tokens", "raw": "raw"}
FOLDERS = {"tokens": "wikitext-103", "raw": "wikitext-103-raw"}
HUB_CONFIGS = {"tokens": "wikitext-103-v1", "raw": "wikitext-103-raw-v1"}  # Salesforce/wikitext
HUB_SCHEMA = "the Hub's WikiText-103 parquet has one string column 'text' (one row per line)"

GENSIM_ENWIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
DEMO_VALID_ARTICLES = 8
DEMO_TEST_ARTICLES = 8
DEMO_MIN_COUNT = 3  # words seen fewer times in the demo train split become <unk> (WikiText: < 3)

_TOP_HEADING = re.compile(r"^= (?!= )(.*\S) =$")


def article_title(line: str) -> str | None:
    """The title of a top-level heading line `` = Title = `` (not `` = = Section = = ``), else None."""
    m = _TOP_HEADING.match(line.strip())
    return m.group(1) if m else None


# ------------------------------------------------------------------------------------------------
# The format


class WikiText103Format(RawFormat):
    section = "wikitext103"
    # Every article already ends with its last line's <eos> word, and the standard WikiText-103
    # count has no end-of-article token: the pipeline's EOS is not a scored target.
    evaluate_eos = False

    def _layout(self, source: Path) -> tuple[str, Path]:
        """(variant, folder): the official files first, then the Hub's parquet configs."""
        source = Path(source)
        for variant in ("tokens", "raw"):
            for d in (source, source / FOLDERS[variant], source / "wikitext-103"):
                if (d / f"wiki.train.{VARIANT_EXT[variant]}").is_file():
                    return variant, d
        if (hub := self._hub_layout(source)) is not None:
            return hub[0], hub[1]
        raise DataError(
            f"{source}: no wiki.train.tokens or wiki.train.raw (WikiText-103 layout: "
            "wikitext-103/wiki.{train,valid,test}.tokens, or wikitext-103-raw/wiki.*.raw) and no Hub parquet "
            f"({HUB_CONFIGS['tokens']}/ or {HUB_CONFIGS['raw']}/ holding train-*.parquet or train/*.parquet)"
        )

    @staticmethod
    def _hub_layout(source: Path) -> tuple[str, Path, dict[str, list[Path]]] | None:
        """("hub:<tokens|raw>" or "hub-converted:<tokens|raw>", config folder, parquet files of each split)."""
        for variant, name in HUB_CONFIGS.items():
            for d in (source / name, source):
                if d == source and ("raw" in source.name) != (variant == "raw"):
                    continue  # a config folder given itself: its name says tokens or raw
                found = parquet.split_files(d)
                if found is not None:
                    layout, files = found
                    return f"{'hub' if layout == 'hub' else 'hub-converted'}:{variant}", d, files
        return None

    def variant(self, source: Path) -> str:
        return self._layout(source)[0]

    def scan(self, source: Path) -> dict[str, list[SourceFile]]:
        variant, d = self._layout(source)
        if variant.startswith("hub"):
            return self._stage_hub(Path(source))
        out = {}
        for split, stem in SPLIT_FILES.items():
            p = d / f"wiki.{stem}.{VARIANT_EXT[variant]}"
            if not p.is_file():
                raise DataError(f"{p} is missing (WikiText-103 has wiki.train/valid/test.{VARIANT_EXT[variant]})")
            out[split] = [SourceFile(split, p)]
        return out

    def _stage_hub(self, source: Path) -> dict[str, list[SourceFile]]:
        """The Hub's rows written back as ``wiki.<split>.<tokens|raw>`` (:func:`hub_line`), scanned
        as the official layout; each file labelled by its parquet files."""
        variant, d, files = self._hub_layout(source)  # type: ignore[misc]
        kind = variant.split(":")[1]
        out = staging_dir("wikitext103") / FOLDERS[kind]
        out.mkdir()
        origin = {}
        for split, stem in SPLIT_FILES.items():
            shards = files[split]
            if not shards:
                raise DataError(f"{d}: no {split} parquet file ({split}-*.parquet or {split}/*.parquet)")
            dest = out / f"wiki.{stem}.{VARIANT_EXT[kind]}"
            with open(dest, "w", encoding="utf-8", newline="") as fh:
                for p in shards:
                    for _, row in parquet.rows(p, ("text",), HUB_SCHEMA):
                        fh.write(hub_line(row["text"]))
            origin[dest] = str(shards[0]) + (f" (+{len(shards) - 1} more)" if len(shards) > 1 else "")
        return relabel(self.scan(out.parent), origin)

    def fit_tokenizer(self, train_files: list[SourceFile], out_dir: Path, options: dict[str, Any]) -> Tokenizer:
        paths = [f.path for f in train_files]
        default = "word" if all(p.suffix == ".tokens" for p in paths) else "sentencepiece"
        return fit_text_tokenizer(str(options.get("tokenizer", default)), paths, out_dir, options)

    def load_tokenizer(self, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
        return load_text_tokenizer(corpus_dir, manifest)

    def articles(self, f: SourceFile) -> Iterator[tuple[str, str]]:
        """(title, text) of every article of a split file, streamed line by line."""
        title: str | None = None
        lines: list[str] = []
        try:
            with open(f.path, encoding="utf-8", newline="") as fh:
                for line in fh:
                    t = article_title(line.lstrip(BOM))  # a byte-order mark: removed in read (normalize_text)
                    if t is not None:
                        if title is not None:
                            yield title, "".join(lines)
                            lines = []
                        title = t
                    lines.append(line)
        except UnicodeDecodeError as e:
            raise DataError(f"{f.label}: not UTF-8 text ({e.reason})") from None
        except OSError as e:
            raise DataError(f"{f.label}: cannot read ({e.strerror})") from None
        if title is None:
            raise DataError(f"{f.label}: no article heading (a line ' = Title = ') found")
        yield title, "".join(lines)

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        for title, raw in self.articles(f):
            text, normalized = normalize_text(raw)  # a BOM or CRLF line ends must not change the tokens
            yield RawDoc(
                content=tokenizer.encode(text),  # type: ignore[attr-defined]
                name=title,
                num_words=count_words(text, eos_per_line=True),
                num_bytes=len(raw.encode("utf-8")),
                normalized=normalized,
            )

    def demo(self, out: Path) -> Path:
        """The gensim Wikipedia articles as ``out/wikitext-103/wiki.*.tokens``; returns that folder."""
        return write_demo(Path(out), variant="tokens")


FORMAT = WikiText103Format()


def hub_line(text: str) -> str:
    """One Hub row as its line of the official file. The Hub's rows are the file's lines with
    their newline, except blank lines, which are "" (its loading script, datasets' wikitext.py:
    ``{"text": row if row.strip() else ""}``); WikiText-103's blank lines are " " (one space), as
    every line of it starts with one. A row without its newline gets one."""
    if not text.strip():
        return " \n"
    return text if text.endswith("\n") else text + "\n"


# ------------------------------------------------------------------------------------------------
# Demo: Wikipedia markup -> WikiText-style text


def gensim_enwiki_path() -> Path:
    """The enwiki excerpt in the installed gensim package's test data (gensim is not imported)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the WikiText-103 demo needs the gensim package (pip install gensim) for its Wikipedia data")
    p = Path(list(spec.submodule_search_locations)[0]) / GENSIM_ENWIKI
    if not p.is_file():
        raise DataError(f"{p} is missing (gensim without its test data?)")
    return p


def wikipedia_pages(path: Path) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of every main-namespace, non-redirect page of a MediaWiki XML export (.bz2)."""
    try:
        with bz2.open(path, "rb") as fh:
            for _, el in ET.iterparse(fh):
                if el.tag.rsplit("}", 1)[-1] != "page":
                    continue
                kids = {c.tag.rsplit("}", 1)[-1]: c for c in el}
                text = el.find("./{*}revision/{*}text")
                if (
                    kids.get("ns") is not None
                    and kids["ns"].text == "0"
                    and "redirect" not in kids
                    and text is not None
                    and text.text
                ):
                    yield kids["title"].text or "", text.text
                el.clear()
    except (OSError, EOFError, ET.ParseError) as e:
        raise DataError(f"{path}: not a readable MediaWiki XML export ({e})") from None


_DROP_TAGS = "ref|math|gallery|timeline|syntaxhighlight|source|score|imagemap|chem|hiero|pre|table|graph|mapframe"
_DROP_SECTIONS = {
    "see also",
    "references",
    "external links",
    "further reading",
    "notes",
    "bibliography",
    "sources",
    "footnotes",
    "citations",
    "notes and references",
    "references and notes",
    "works cited",
}


def _remove_nested(text: str, open_: str, close: str) -> str:
    """``text`` without every (possibly nested) ``open_ ... close`` span."""
    out, depth, i, n = [], 0, 0, len(text)
    start = 0
    while i < n:
        if text.startswith(open_, i):
            if depth == 0:
                out.append(text[start:i])
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
            if depth == 0:
                start = i
        else:
            i += 1
    if depth == 0:
        out.append(text[start:])
    return "".join(out)


def _template(m: re.Match) -> str:
    """The text a few common inline templates render (others render nothing)."""
    parts = [p.strip() for p in m.group(1).split("|")]
    name = parts[0].lower()
    args = [p for p in parts[1:] if "=" not in p]
    if name in ("convert", "cvt") and len(args) >= 2:
        return f"{args[0]} {args[1]}"
    if name in ("lang", "lang-en", "transl") and args:
        return args[-1]
    if name in ("nowrap", "nobr", "small", "smaller", "big", "em", "strong", "sic", "mvar", "math") and args:
        return args[0]
    return ""


def _link(m: re.Match) -> str:
    target, _, label = m.group(1).partition("|")
    if re.match(r"\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?)\s*:", target, re.I):
        return ""
    return (label or target.lstrip(":").split("#")[0] or target).strip()


def strip_markup(wikitext: str) -> list[tuple[int, str]]:
    """Plain text of an article's wikitext as blocks: (level, heading) for a heading of level
    >= 2 (``== S ==`` is 2) and (0, paragraph) for a paragraph or list item. A stdlib
    approximation of a wikitext parser: templates, tables, references, files, categories and
    formatting are removed; link labels and the text of inline tags stay."""
    t = re.sub(r"<!--.*?-->", "", wikitext, flags=re.S)
    t = re.sub(rf"<({_DROP_TAGS})\b[^>]*/>", "", t, flags=re.I)
    t = re.sub(rf"<({_DROP_TAGS})\b[^>]*>.*?</\1\s*>", "", t, flags=re.I | re.S)
    t = re.sub(r"<references\s*/?>", "", t, flags=re.I)
    for _ in range(20):  # innermost templates first
        t, n = re.subn(r"\{\{([^{}]*)\}\}", _template, t)
        if not n:
            break
    t = _remove_nested(t, "{{", "}}")
    t = _remove_nested(t, "{|", "|}")
    for prefix in ("[[File:", "[[Image:", "[[file:", "[[image:"):  # captions may hold links
        while prefix in t:
            i = t.index(prefix)
            j, depth = i, 0
            while j < len(t):
                if t.startswith("[[", j):
                    depth, j = depth + 1, j + 2
                elif t.startswith("]]", j):
                    depth, j = depth - 1, j + 2
                    if depth == 0:
                        break
                else:
                    j += 1
            t = t[:i] + t[j:]
    t = re.sub(r"\[\[([^\[\]]*)\]\]", _link, t)
    t = re.sub(r"\[(?:https?|ftp)://[^\s\]]+\s+([^\]]*)\]", r"\1", t)
    t = re.sub(r"\[(?:https?|ftp)://[^\s\]]*\]", "", t)
    t = re.sub(r"(?:https?|ftp)://\S+", "", t)
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"<br\s*/?>", " ", t, flags=re.I)
    t = re.sub(r"</?[a-zA-Z][^>]*>", "", t)
    t = re.sub(r"__[A-Z]+__", "", t)
    t = html.unescape(t)
    t = re.sub(r"[ \t\u00a0]+", " ", t.replace("\u00a0", " "))
    t = re.sub(r" ?\( ?[,;:]? ?\)", "", t)  # parentheses left empty by removed templates

    blocks: list[tuple[int, str]] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            s = " ".join(para).strip()
            if s:
                blocks.append((0, s))
            para.clear()

    for raw in t.split("\n"):
        line = raw.strip()
        h = re.match(r"^(={2,6})\s*(.*?)\s*\1$", line)
        if h:
            flush()
            blocks.append((len(h.group(1)), h.group(2).strip()))
        elif not line or line.startswith(("|", "!", "----", "{", "}")):
            flush()
        elif line[0] in "*#:;":
            flush()
            item = line.lstrip("*#:; ").strip()
            if item:
                blocks.append((0, item))
        else:
            para.append(line)
    flush()
    return _drop_sections(blocks)


def _drop_sections(blocks: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Without reference-type sections (See also, References, External links, ...) and without
    headings whose section has no paragraph."""
    kept: list[tuple[int, str]] = []
    skip_level = 0
    for level, s in blocks:
        if level and skip_level and level > skip_level:
            continue
        if level:
            skip_level = level if s.lower() in _DROP_SECTIONS else 0
        if skip_level:
            continue
        kept.append((level, s))
    out: list[tuple[int, str]] = []
    for i, (level, s) in enumerate(kept):  # a heading stays when a paragraph follows before a heading of its level
        if level:
            for nl, _ in kept[i + 1 :]:
                if nl == 0:
                    out.append((level, s))
                    break
                if nl <= level:
                    break
        else:
            out.append((level, s))
    return out


_SPLIT_CHARS = re.compile(r"([^\w\s.,'\-@])")
_WS = re.compile(r"\s+")


def wikitext_tokenize(text: str) -> str:
    """WikiText-style (Moses-like) tokenization of plain text: punctuation split off by spaces,
    ``1,000`` -> ``1 @,@ 000``, ``1.5`` -> ``1 @.@ 5``, ``role-playing`` -> ``role @-@ playing``,
    clitics split (``game's`` and ``game\u2019s`` -> ``game 's``), a word's final period split off (``lit.`` ->
    ``lit .``) unless the word is an abbreviation with inner periods (``U.S.``)."""
    t = _WS.sub(" ", text.replace("\u00a0", " ").replace("\u2019", "'").replace("\0", ""))
    t = _SPLIT_CHARS.sub(r" \1 ", t)
    t = re.sub(r"(?<=[^\W_])-(?=[^\W_])", " @-@ ", t)
    t = re.sub(r"(?<=\d),(?=\d)", " @,@ ", t)
    t = re.sub(r"(?<=\d)\.(?=\d)", " @.@ ", t)
    t = re.sub(r",", " , ", t).replace("@ , @", "@,@")
    t = re.sub(r"(?<=[^\W\d_])'(?=[^\W\d_])", " \0", t)  # a clitic's apostrophe, marked as NUL
    words = []
    for w in t.split():
        if w in ("@-@", "@,@", "@.@"):
            words.append(w)
            continue
        if set(w) == {"."}:  # an ellipsis
            words.append(w)
            continue
        lead = []
        while len(w) > 1 and w[0] in "'-.":
            lead.append(w[0])
            w = w[1:]
        trail = []
        while len(w) > 1 and w[-1] in "'-":
            trail.insert(0, w[-1])
            w = w[:-1]
        if len(w) > 1 and w.endswith(".") and not (w.endswith("...") or re.search(r"[^\W\d_]\.[^\W\d_]", w)):
            trail.insert(0, ".")
            w = w[:-1]
        words.extend([*lead, w, *trail])
    return " ".join(words).replace("\0", "'")


def demo_articles() -> list[tuple[str, list[str]]]:
    """(title, WikiText lines without ``<unk>``) of every demo article: `` = Title = ``,
    `` = = Section = = `` and paragraph lines, blank lines around headings as in WikiText."""
    out = []
    for title, markup in wikipedia_pages(gensim_enwiki_path()):
        blocks = strip_markup(markup)
        if not any(level == 0 for level, _ in blocks):
            continue
        lines = [" ", f" = {wikitext_tokenize(title)} = ", " "]
        for level, s in blocks:
            tok = wikitext_tokenize(s)
            if not tok:
                continue
            if level:
                marks = " ".join(["="] * level)
                lines += [" "] if lines[-1] != " " else []
                lines += [f" {marks} {tok} {marks} ", " "]
            else:
                lines.append(f" {tok} ")
        out.append((title, lines))
    return out


def demo_split(titles: list[str]) -> dict[str, list[int]]:
    """Article indices of each demo split: the 8 articles with the smallest sha256(title) are
    test, the next 8 validation, the rest train; each split keeps the dump's order."""
    order = sorted(range(len(titles)), key=lambda i: hashlib.sha256(titles[i].encode()).hexdigest())
    test = set(order[:DEMO_TEST_ARTICLES])
    valid = set(order[DEMO_TEST_ARTICLES : DEMO_TEST_ARTICLES + DEMO_VALID_ARTICLES])
    return {
        "train": [i for i in range(len(titles)) if i not in test and i not in valid],
        "validation": sorted(valid),
        "test": sorted(test),
    }


def write_demo(out: Path, variant: str = "tokens") -> Path:
    """Write the demo in WikiText-103's layout: ``out/wikitext-103/wiki.*.tokens`` (variant
    "tokens": words seen fewer than 3 times in the demo train split, and every word not in it,
    are ``<unk>`` in all splits, as WikiText-103 did with counts over its corpus; article titles
    are kept whole so that documents have readable names) or
    ``out/wikitext-103-raw/wiki.*.raw`` (variant "raw": no ``<unk>``). Returns the folder."""
    if variant not in VARIANT_EXT:
        raise DataError(f"unknown WikiText-103 variant '{variant}' (expected tokens or raw)")
    articles = demo_articles()
    split = demo_split([t for t, _ in articles])
    keep = None
    if variant == "tokens":
        counts = Counter(w for i in split["train"] for line in articles[i][1] for w in line.split())
        keep = {w for w, c in counts.items() if c >= DEMO_MIN_COUNT}
    d = Path(out) / FOLDERS[variant]
    d.mkdir(parents=True, exist_ok=True)
    for name, idx in split.items():
        lines = []
        for i in idx:
            for line in articles[i][1]:
                if keep is not None and article_title(line) is None:  # titles stay readable names
                    line = " " + " ".join(w if w in keep else UNK_WORD for w in line.split()) + " "
                lines.append(line if line.strip() else " ")
        (d / f"wiki.{SPLIT_FILES[name]}.{VARIANT_EXT[variant]}").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8"
        )
    return d
