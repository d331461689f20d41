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

Demo (``demo``): the 106 real English Wikipedia articles in the gensim wheel's test data, their
markup stripped and tokenized WikiText-style (``repro/data/demos/wikitext103.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repro.data.formats import parquet
from repro.data.formats.stage import relabel, staging_dir
from repro.data.source import DataError, RawDoc, RawFormat, SourceFile, Tokenizer
from repro.data.text import BOM, count_words, fit_text_tokenizer, load_text_tokenizer, normalize_text

# Official split names -> file stems.
SPLIT_FILES = {"train": "train", "validation": "valid", "test": "test"}
VARIANT_EXT = {"tokens": "tokens", "raw": "raw"}
FOLDERS = {"tokens": "wikitext-103", "raw": "wikitext-103-raw"}
HUB_CONFIGS = {"tokens": "wikitext-103-v1", "raw": "wikitext-103-raw-v1"}  # Salesforce/wikitext
HUB_SCHEMA = "the Hub's WikiText-103 parquet has one string column 'text' (one row per line)"

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
        """The gensim Wikipedia articles as ``out/wikitext-103/wiki.*.tokens``
        (``repro.data.demos.wikitext103``); returns that folder."""
        from repro.data.demos.wikitext103 import write_demo

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
