"""Prepared corpora on disk: ``repro data prepare / verify / info`` and the reader training uses.

Layout of a prepared corpus, ``<data dir>/<section>/<corpus>/``::

    manifest.json         what was prepared from what (below); written last
    <split>.bin           content ids of every document of the split, concatenated (memory-mapped;
                          dtype: the smallest unsigned integer that holds the vocabulary)
    <split>.offsets.npy   int64 [documents + 1]: document d is bin[offsets[d]:offsets[d + 1]]
    <split>.words.npy     int64 [documents]: words per document (-1: not counted)
    <split>.names.txt     one document name per line
    tokenizer/            the tokenizer's files (e.g. a SentencePiece .model)

``manifest.json``: format version, section, corpus, source variant and path, a sha256 of the source
files, the data's origin ("paper", "user": the user's own data in the official layout, "demo"),
tokenizer identity / hash / vocabulary size, the preparation options, per split the number of
documents, content tokens, words and bytes, every skipped file with its reason, the documents
whose raw text was normalised (byte-order mark, CRLF), a sha256 of every store file (``verify``
re-checks them), the command, git SHA, date and duration. ``data_identity`` hashes what the
store holds (not when or from where it was prepared): runs record it and refuse a changed store.

Atomicity: everything is written into ``<corpus>.partial/`` and renamed to ``<corpus>/`` only when
complete, so an interrupted prepare leaves nothing that looks finished; rerunning the command
discards the partial directory and prepares again.

The data directory: ``--data-dir``, else ``$REPRO_DATA_DIR``, else ``./data``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.source import SPLITS, CorpusSource, DataError, DatasetInfo, RawFormat, SkipFile, Tokenizer
from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.eval.protocols import Document

FORMAT_VERSION = 1
DATA_DIR_ENV = "REPRO_DATA_DIR"


def data_dir(override: Path | str | None = None) -> Path:
    """``--data-dir``, else ``$REPRO_DATA_DIR``, else ``./data``."""
    return Path(override or os.environ.get(DATA_DIR_ENV) or "data")


def content_dtype(vocab_size: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise DataError(f"vocabulary of {vocab_size} ids does not fit 32 bits")


def corpus_key(corpus: str, options: dict[str, Any]) -> str:
    """The directory name of a corpus prepared with ``options`` (e.g. ``demo-sentencepiece-4096``),
    so that presets with different tokenizers never share a store."""
    parts = [str(v) for v in options.values()]
    return "-".join([corpus, *parts]).replace("/", "_").replace(" ", "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _git_sha() -> str:
    from repro.runinfo import git_sha

    return git_sha()


def prepare(
    fmt: RawFormat,
    source: Path,
    out: Path,
    options: dict[str, Any],
    *,
    corpus: str,
    is_paper_data: bool,
    dataset_name: str,
    on_file: Callable[[int, int, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    is_demo: bool = False,
) -> dict[str, Any]:
    """Read ``source`` (an official raw layout) with ``fmt`` and write the corpus to ``out``
    atomically; returns the manifest. ``on_file(done, total, label)`` reports progress.

    The manifest's ``origin``: "demo" (``is_demo``), "paper" (``is_paper_data`` and, where the
    format knows them, the official release's document counts per split) or "user" (the user's
    own data in the official layout; ``origin_note`` says why); ``is_paper_data`` is origin == "paper"."""
    t0 = time.time()
    source = check_source_dir(source)
    variant = fmt.variant(source)
    files = fmt.scan(source)
    if not files.get("train"):
        raise DataError(f"{source}: no training files found")
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    created = [p for p in [tmp.parent, *tmp.parent.parents] if not p.exists()]  # removed again on failure
    tmp.mkdir(parents=True)
    try:
        tok = fmt.fit_tokenizer(files["train"], tmp / "tokenizer", options)
        dtype = content_dtype(tok.vocab_size)
        total = sum(len(v) for v in files.values())
        done, skipped, splits, normalized = 0, [], {}, {}
        src_hash = hashlib.sha256()
        for split in SPLITS:
            if split not in files:
                continue
            offsets, words, names, n_bytes = [0], [], [], 0
            with open(tmp / f"{split}.bin", "wb") as binf:
                for f in files[split]:
                    src_hash.update(f.label.encode() + b"\0" + _sha256(f.path).encode())
                    try:
                        for doc in fmt.read(f, tok):
                            c = np.asarray(doc.content)
                            if c.ndim != 1 or not len(c):
                                raise DataError(f"{f.label}: document '{doc.name}' is empty")
                            if c.min() < 0 or c.max() >= tok.vocab_size:
                                raise DataError(f"{f.label}: ids outside [0, {tok.vocab_size}) in '{doc.name}'")
                            binf.write(c.astype(dtype).tobytes())
                            offsets.append(offsets[-1] + len(c))
                            words.append(-1 if doc.num_words is None else int(doc.num_words))
                            names.append(doc.name.replace("\n", " "))
                            n_bytes += int(doc.num_bytes or 0)
                            for what in doc.normalized:
                                normalized[what] = normalized.get(what, 0) + 1
                    except SkipFile as e:
                        skipped.append({"file": f.label, "split": split, "reason": str(e)})
                        if warn:
                            warn(f"skipped {f.label}: {e}")
                    done += 1
                    if on_file:
                        on_file(done, total, f.label)
            np.save(tmp / f"{split}.offsets.npy", np.asarray(offsets, np.int64))
            np.save(tmp / f"{split}.words.npy", np.asarray(words, np.int64))
            (tmp / f"{split}.names.txt").write_text("".join(n + "\n" for n in names))
            w = np.asarray(words)
            splits[split] = {
                "documents": len(names),
                "tokens": int(offsets[-1]),
                "words": int(w.sum()) if len(w) and (w >= 0).all() else None,
                "bytes": n_bytes,
            }
        if not splits.get("train", {}).get("documents"):
            raise DataError(f"{source}: the training split has no documents (every file was skipped)")
        origin, note = ("demo", "") if is_demo else ("paper", "") if is_paper_data else ("user", "")
        official = fmt.official_documents(variant) if origin == "paper" else None
        if official:
            have = {k: splits.get(k, {}).get("documents", 0) for k in official}
            if have != official:
                origin = "user"
                note = "documents per split " + ", ".join(f"{k} {have[k]:,}" for k in official) + (
                    "; the official release has " + ", ".join(f"{k} {v:,}" for k, v in official.items()))  # fmt: skip
        files_hash = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        tok_files = sorted((tmp / "tokenizer").rglob("*")) if (tmp / "tokenizer").exists() else []
        manifest = {
            "format_version": FORMAT_VERSION,
            "section": fmt.section,
            "corpus": corpus,
            "dataset": dataset_name,
            "is_paper_data": origin == "paper",
            "origin": origin,
            "origin_note": note,
            "source": {"path": str(source), "variant": variant, "sha256": src_hash.hexdigest()},
            "tokenizer": {
                "identity": tok.identity,
                "hash": tok.hash(),
                "vocab_size": int(tok.vocab_size),
                "files": [str(p.relative_to(tmp)) for p in tok_files if p.is_file()],
            },
            "options": options,
            "content_dtype": dtype.name,
            "splits": splits,
            "skipped": skipped,
            # documents whose raw text was normalised before tokenizing: "bom" (a byte-order mark
            # removed), "crlf" (CRLF / CR line ends made LF); see RawDoc.normalized
            "normalized": normalized,
            "files_sha256": files_hash,
            "command": " ".join(["repro", *sys.argv[1:]]) if sys.argv and "repro" in sys.argv[0] else "",
            "git_sha": _git_sha(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - t0, 2),
        }
        load_tokenizer(fmt, tmp, manifest, where=out)  # what a reader will load: refused now, not at training
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = out.with_name(out.name + ".old")
        if out.exists():
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
        tmp.rename(out)
        if old.exists():
            shutil.rmtree(old)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # the section / data folders this prepare made (innermost first), if left empty
            try:
                p.rmdir()
            except OSError:
                break
        raise


def load_tokenizer(fmt: RawFormat, corpus_dir: Path, manifest: dict[str, Any], where: Path | None = None) -> Tokenizer:
    """``fmt.load_tokenizer`` of a prepared corpus, checked against its manifest whatever the
    format: the same identity, vocabulary size and (where recorded) hash as the tokenizer the
    corpus was prepared with, else one DataError line naming ``where`` (default ``corpus_dir``).
    A format whose ``load_tokenizer`` does not give back what its ``fit_tokenizer`` wrote (e.g.
    one that forgot to define it) fails here instead of decoding with the wrong table."""
    where = Path(where or corpus_dir)
    info = manifest.get("tokenizer") or {}
    tok = fmt.load_tokenizer(Path(corpus_dir), manifest)
    name = f"{type(fmt).__name__}.load_tokenizer"
    if tok.identity != info.get("identity"):
        raise DataError(
            f"{where}: {name} gives tokenizer '{tok.identity}', but the corpus was prepared with "
            f"'{info.get('identity')}' (the format's load_tokenizer must load what its fit_tokenizer wrote)"
        )
    if "vocab_size" in info and int(tok.vocab_size) != int(info["vocab_size"]):
        raise DataError(f"{where}: {name} gives a vocabulary of {tok.vocab_size}, the manifest {info['vocab_size']}")
    if "hash" in info and tok.hash() != info["hash"]:
        raise DataError(f"{where}: tokenizer files do not match the manifest (damaged or modified)")
    return tok


def check_source_dir(source: Path | str) -> Path:
    """``source`` as a Path, or one DataError line: it does not exist / is not a directory."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"source {source} does not exist")
    if not source.is_dir():
        raise DataError(f"source {source} is not a directory (give the dataset's folder)")
    return source


def read_manifest(corpus_dir: Path) -> dict[str, Any]:
    path = Path(corpus_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{corpus_dir} is not a prepared corpus (no manifest.json)")
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: unknown corpus format (expected format_version {FORMAT_VERSION})")
    return m


def manifest_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


# Manifest entries that say when, where from and by what a store was prepared, not what it holds.
_VOLATILE = ("date", "seconds", "command", "git_sha", "source")


def data_identity(manifest: dict[str, Any]) -> str:
    """sha256 of what a prepared store holds: its manifest without the date, duration, command,
    git SHA and source path (every store file's sha256, the tokenizer, the options and counts
    stay). Preparing the same data again with the same options gives the same identity (the
    tokenizers train reproducibly); another tokenizer or other files give another. Runs record
    its first 16 digits as ``data_hash`` and refuse a store whose identity changed."""
    kept = {k: v for k, v in manifest.items() if k not in _VOLATILE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ which data a run was trained on

RUN_DATA = "data.json"  # in a run directory: the prepared store it trains on (record_run_data)


def record_run_data(workdir: Path, info: DatasetInfo) -> None:
    """Write ``<workdir>/data.json``: the corpus, its directory and data hash a run trains on."""
    from repro.runinfo import write_json_atomic

    write_json_atomic(Path(workdir) / RUN_DATA, {
        "corpus": info.corpus, "path": str(Path(info.path).resolve()) if info.path else "",
        "data_hash": info.data_hash, "manifest_hash": info.manifest_hash, "dataset": info.name,
    })  # fmt: skip


def recorded_run_data(workdir: Path) -> dict[str, Any] | None:
    """What a run directory records of its data: ``data.json``, else (runs from before it) the
    dataset of its ``results.json``; None when neither is readable."""
    workdir = Path(workdir)
    for name in (RUN_DATA, "results.json"):
        try:
            d = json.loads((workdir / name).read_text())
        except (OSError, ValueError):
            continue
        if name == RUN_DATA and isinstance(d, dict):
            return d
        if isinstance(d, dict) and isinstance(d.get("dataset"), dict):
            return {"manifest_hash": d["dataset"].get("manifest_hash", ""), "dataset": d["dataset"].get("name", "")}
    return None


def check_run_data(workdir: Path, info: DatasetInfo, action: str) -> None:
    """One DataError line when the prepared store ``info`` is not the data the run in ``workdir``
    was trained on (prepared again since, with another tokenizer or other files): ``action``
    ("evaluate", "sample from", "resume") is refused. Synthetic data and runs that record no
    data pass."""
    rec = recorded_run_data(workdir)
    if rec is None or not info.manifest_hash:
        return
    if rec.get("data_hash"):
        same, old, new = rec["data_hash"] == info.data_hash, rec["data_hash"][:16], info.data_hash[:16]
    elif rec.get("manifest_hash"):
        same, old, new = rec["manifest_hash"] == info.manifest_hash, rec["manifest_hash"][:16], info.manifest_hash[:16]
    else:
        return
    if not same:
        raise DataError(
            f"refusing to {action} {workdir}: it was trained on data hash {old}, but {info.path or 'the store'} now "
            f"holds data hash {new} (prepared again since); prepare the run's data as it was, or train a new run"
        )


def runs_using(store: Path, runs_root: Path | str = "runs") -> list[Path]:
    """Run directories under ``runs_root`` whose ``data.json`` names the store ``store``."""
    root, target = Path(runs_root), Path(store).resolve()
    if not root.is_dir():
        return []
    found = []
    for f in sorted(root.rglob(RUN_DATA)):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("path") and Path(d["path"]) == target:
            found.append(f.parent)
    return found


def verify(corpus_dir: Path) -> dict[str, Any]:
    """Re-check a prepared corpus against its manifest: every store file's sha256, and the
    offsets / words / names against the split counts. Raises DataError naming the first problem."""
    corpus_dir = Path(corpus_dir)
    m = read_manifest(corpus_dir)
    for name, digest in m["files_sha256"].items():
        p = corpus_dir / name
        if not p.is_file():
            raise DataError(f"{p} is missing")
        if _sha256(p) != digest:
            raise DataError(f"{p} does not match its manifest checksum (damaged or modified)")
    dtype = np.dtype(m["content_dtype"])
    for split, s in m["splits"].items():
        off = np.load(corpus_dir / f"{split}.offsets.npy")
        size = (corpus_dir / f"{split}.bin").stat().st_size // dtype.itemsize
        if len(off) != s["documents"] + 1 or off[-1] != s["tokens"] or size != s["tokens"]:
            raise DataError(f"{corpus_dir}: split {split} does not match its manifest counts")
    return m


def list_corpora(root: Path) -> list[dict[str, Any]]:
    """Every prepared corpus under a data directory (with its manifest), for ``repro data info``."""
    out = []
    for p in sorted(Path(root).glob("*/*/manifest.json")):
        try:
            m = read_manifest(p.parent)
        except DataError as e:
            out.append({"path": str(p.parent), "error": str(e)})
            continue
        out.append({"path": str(p.parent), **m})
    return out


class Corpus(CorpusSource):
    """A prepared corpus as a :class:`CorpusSource` (memory-mapped; nothing is loaded up front).

    ``fmt.tokens`` / ``fmt.positions`` turn stored content into the model's sequences under the
    preset's data config (e.g. an image ordering, a lower resolution)."""

    def __init__(self, corpus_dir: Path, fmt: RawFormat, data_cfg: Any):
        self.dir = Path(corpus_dir)
        self.manifest = read_manifest(self.dir)
        self.fmt, self.cfg = fmt, data_cfg
        self.tokenizer: Tokenizer = load_tokenizer(fmt, self.dir, self.manifest)
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"]) + NUM_RESERVED
        self._dtype = np.dtype(self.manifest["content_dtype"])
        self._bins: dict[str, np.ndarray] = {}
        self._off: dict[str, np.ndarray] = {}
        self._words: dict[str, np.ndarray] = {}
        self._default_tokens = type(fmt).tokens is RawFormat.tokens
        self.info = DatasetInfo(
            # A user's own data in the official layout is never named as the dataset itself.
            name=self.manifest["dataset"] + (" layout: user data" if self.manifest.get("origin") == "user" else ""),
            variant=self.manifest["source"]["variant"],
            is_paper_data=bool(self.manifest["is_paper_data"]),
            manifest_hash=manifest_hash(self.manifest),
            path=str(self.dir),
            corpus=str(self.manifest.get("corpus", "")),
            data_hash=data_identity(self.manifest)[:16],
        )
        self._train_lengths: np.ndarray | None = None

    def _split(self, split: str):
        if split not in self._off:
            if split not in self.manifest["splits"]:
                have = ", ".join(self.manifest["splits"])
                raise DataError(f"{self.dir} has no '{split}' split (it has: {have})")
            self._off[split] = np.load(self.dir / f"{split}.offsets.npy")
            self._words[split] = np.load(self.dir / f"{split}.words.npy")
            n = int(self._off[split][-1])
            self._bins[split] = (
                np.memmap(self.dir / f"{split}.bin", dtype=self._dtype, mode="r", shape=(n,))
                if n
                else np.zeros(0, self._dtype)
            )
        return self._bins[split], self._off[split], self._words[split]

    def content(self, split: str, i: int) -> np.ndarray:
        b, off, _ = self._split(split)
        return np.asarray(b[off[i] : off[i + 1]])

    def num_documents(self, split: str) -> int:
        return len(self._split(split)[1]) - 1

    def document(self, split: str, i: int) -> Document:
        _, _, words = self._split(split)
        toks = self.fmt.tokens(self.content(split, i), self.cfg)
        pos = self.fmt.positions(len(toks), self.cfg)
        evaluated = None
        if not self.fmt.evaluate_eos:
            evaluated = np.ones(len(toks) - 1, bool)
            evaluated[-1] = False
        w = int(words[i])
        return Document(toks, positions=pos, evaluated=evaluated, num_words=None if w < 0 else w)

    def train_lengths(self) -> np.ndarray:
        if self._train_lengths is None:
            _, off, _ = self._split("train")
            content = np.diff(off)
            if self._default_tokens:
                self._train_lengths = content + 2  # SOS and EOS
            else:  # the format may change lengths (e.g. a lower image resolution)
                known = self.fmt.num_tokens(content, self.cfg)
                self._train_lengths = np.asarray(known) if known is not None else np.array(
                    [len(self.fmt.tokens(self.content("train", i), self.cfg)) for i in range(len(content))]
                )  # fmt: skip
        return self._train_lengths

    @property
    def augments(self) -> bool:
        return self.fmt.augments(self.cfg)

    def train_slice(self, i: int, start: int, stop: int, rng: np.random.Generator | None = None):
        if rng is not None and self.augments:  # augment the crop's content, keep SOS / EOS
            toks, pos = self.train_slice(i, start, stop)
            inner = toks >= NUM_RESERVED
            c = self.fmt.augment(toks[inner] - NUM_RESERVED, rng, self.cfg, self.tokenizer)
            head = toks[: int(np.argmax(inner))] if inner.any() else toks
            tail = toks[len(toks) - int(np.argmax(inner[::-1])) :] if inner.any() else toks[:0]
            return np.concatenate([head, np.asarray(c, np.int32) + NUM_RESERVED, tail]).astype(np.int32), None
        if self._default_tokens:  # SOS, content + 3, EOS: slice without building the document
            b, off, _ = self._split("train")
            n = int(off[i + 1] - off[i])
            idx = np.arange(start, stop)
            c = np.asarray(b[off[i] + max(start - 1, 0) : off[i] + min(stop - 1, n)], np.int32) + NUM_RESERVED
            toks = np.empty(len(idx), np.int32)
            inner = (idx >= 1) & (idx <= n)
            toks[inner] = c
            toks[idx == 0] = SOS_ID
            toks[idx == n + 1] = EOS_ID
            pos = None
        else:
            full = self.fmt.tokens(self.content("train", i), self.cfg)
            toks = full[start:stop]
            p = self.fmt.positions(len(full), self.cfg)
            pos = None if p is None else p[start:stop]
        return toks, pos

    def data_hash(self, split: str, num: int = 0) -> str:
        return self.info.data_hash
