"""The WikiText-103 demo (``repro data demo wikitext103``): the 106 real English Wikipedia articles
(2016 dump excerpt, CC BY-SA 3.0) in the gensim wheel's test data, read with bz2 + XML parsing
(gensim is never imported), their markup stripped (:func:`strip_markup`), tokenized
WikiText-style (:func:`wikitext_tokenize`) and written as ``wikitext-103/wiki.{train,valid,test}.tokens``
(or the ``raw`` variant without ``<unk>``).
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

from repro.data.source import DataError
from repro.data.text import UNK_WORD
from repro.data.wikitext103 import FOLDERS, SPLIT_FILES, VARIANT_EXT, article_title

GENSIM_ENWIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
DEMO_VALID_ARTICLES = 8
DEMO_TEST_ARTICLES = 8
DEMO_MIN_COUNT = 3  # words seen fewer times in the demo train split become <unk> (WikiText: < 3)


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
