"""The data contract: what a section gives the shared data pipeline.

A section's data is a :class:`DocumentSource` of one of two kinds:

* :class:`SyntheticSource`: a stream of training documents drawn from the batch's rng
  (``generate``) and fixed held-out documents (``eval_documents``), e.g. the copy task;
* :class:`CorpusSource`: a finite corpus of documents per split (``num_documents``,
  ``document``, ``train_lengths``, ``train_slice``). Every corpus section's corpus is one the shared
  store prepared (``repro/data/store.py``: ``Corpus``) from the raw layout its :class:`RawFormat`
  reads.

A section's data module (``repro/data/<section>.py``) knows one thing: its dataset's official raw
layout and tokenization. It provides a :class:`RawFormat` subclass:

    variant(source)        which official layout ``source`` is in (e.g. "png", "tar", "npz", "v3")
    scan(source)           the files of each split, in a deterministic order; DataError on a bad layout
    fit_tokenizer(...)     the tokenizer (trained on the training files when it is learned, e.g.
                           SentencePiece; fixed ones, e.g. bytes, ignore the files)
    read(file, tokenizer)  the documents of one file, as *content ids* (see below); SkipFile for a
                           file to skip with a reason (counted in the manifest), DataError for bad input
    demo(out)              writes demo raw data in the official layout from data an installed package
                           ships (never downloaded at run time), with its builder in
                           ``repro/data/demos/<section>.py``
    tokens(content, cfg)   the model's token sequence (SOS ... EOS) of one stored document
    positions(n, cfg)      positions from the data for a document of n tokens (None: 1-based offsets)

Content ids are the tokenizer's own ids, 0-based and below ``tokenizer.vocab_size``, without
SOS/EOS and without the reserved-id offset: an image is its 12,288 sub-pixel values 0..255, a book
its SentencePiece ids. The shared store (``repro/data/store.py``) keeps them in the smallest
unsigned dtype that holds the vocabulary (uint8 for images: the prepared ImageNet train split is
the (N, 64, 64, 3) uint8 array). The default ``tokens`` is ``SOS, content + 3, EOS``.

File readers the layouts use (TFRecord, parquet, images, Debian packages, R data) are in
``repro/data/formats/``. Everything after the raw layout (the token store, manifests, training
crops, evaluation windows, process sharding, prefetching) is shared code; a section never
re-implements it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.eval.protocols import Document

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Bad input data: one line that names the file (the CLI prints it, exit code 2)."""


class SkipFile(Exception):  # noqa: N818 - a signal, not an error: the file is skipped with a warning
    """Raised by ``RawFormat.read`` for a file to skip (e.g. a corrupt MIDI file): the reason is
    printed as a warning naming the file and listed in the manifest's ``skipped``."""


@dataclass(frozen=True)
class SourceFile:
    """One raw file of a split. ``member``: a name inside an archive ``path`` (e.g. a tar)."""

    split: str
    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)


@dataclass
class RawDoc:
    """One document read from a raw file.

    content:   1-D ints in [0, tokenizer.vocab_size): the tokenizer's ids, no SOS/EOS, no offset
    name:      what the document is (file name, book id, article title), for messages and manifests
    num_words: words in the dataset's own word counting (text sections: word-level perplexity)
    num_bytes: bytes of the raw text / file it came from
    normalized: changes made to the raw text before tokenizing ("bom": a byte-order mark removed,
               "crlf": CRLF / CR line ends made LF); counted per document in the manifest
    """

    content: np.ndarray
    name: str
    num_words: int | None = None
    num_bytes: int | None = None
    normalized: tuple[str, ...] = ()  # what was normalised in the raw text (e.g. "bom", "crlf"), for the manifest


class Tokenizer:
    """Content ids <-> the data. ``identity`` names it (e.g. "sentencepiece:unigram:8000");
    ``files`` are the files that define it (copied into the prepared corpus and hashed).

    Every concrete tokenizer implements both directions: ``encode(data) -> content ids`` (what a
    ``--prompt`` and a section's reader turn data into) and ``decode(content ids) -> data`` (what
    samples are shown as), with ``decode(encode(x))`` equal to ``x`` up to the tokenizer's own
    normalisation. The base class raises NotImplementedError naming the class for either, so a
    tokenizer that lacks one fails with one clear line rather than an AttributeError
    (tests/test_data.py checks every tokenizer in ``repro/data``)."""

    identity: str = "identity"
    vocab_size: int = 256

    def files(self) -> list[Path]:
        return []

    def hash(self) -> str:
        h = hashlib.sha256(self.identity.encode())
        for f in self.files():
            h.update(Path(f).read_bytes())
        return h.hexdigest()[:16]

    def encode(self, data: Any) -> np.ndarray:
        """The data (text for text tokenizers) as 1-D content ids in [0, vocab_size)."""
        raise NotImplementedError(f"tokenizer {type(self).__name__} ({self.identity}) does not encode")

    def decode(self, content: np.ndarray) -> Any:
        """Content ids back to the data (text for text tokenizers)."""
        raise NotImplementedError(f"tokenizer {type(self).__name__} ({self.identity}) does not decode")


class ByteValues(Tokenizer):
    """Values 0..255 are their own ids (image sub-pixels, raw bytes)."""

    identity = "byte-values:256"
    vocab_size = 256

    def encode(self, data: Any) -> np.ndarray:
        """Values 0..255 (an array of any shape, flattened; or ``bytes``) as uint8 content ids;
        ValueError for a value outside 0..255 (it is no byte value, not to be wrapped around)."""
        if isinstance(data, bytes | bytearray):
            return np.frombuffer(bytes(data), np.uint8).copy()
        values = np.asarray(data).ravel()
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(f"byte values must be 0..255, got {values.min()}..{values.max()}")
        return values.astype(np.uint8)

    def decode(self, content: np.ndarray) -> np.ndarray:
        return np.asarray(content, np.uint8)


def _tokenizer_identity(corpus_dir: Path, manifest: dict[str, Any]) -> str:
    tok = manifest.get("tokenizer")
    ident = tok.get("identity") if isinstance(tok, dict) else tok
    if not isinstance(ident, str):
        raise DataError(f"{corpus_dir}: the manifest has no tokenizer.identity")
    return ident


def tokenizer_from_manifest(cls, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
    """``cls.from_identity`` of a prepared corpus's tokenizer (a fixed tokenizer that its identity
    string defines: MAESTRO's performance events, audio codes); DataError naming the corpus."""
    try:
        return cls.from_identity(_tokenizer_identity(Path(corpus_dir), manifest))
    except ValueError as e:
        raise DataError(f"{corpus_dir}: {e}") from None


class RawFormat:
    """Base class of a section's raw-layout reader (see the module docstring)."""

    section: str = ""  # the owning Section's name (checked by Section: the manifests' "section")
    evaluate_eos: bool = True  # False: EOS is not an evaluated target (images: bits per sub-pixel)

    def variant(self, source: Path) -> str:
        return "default"

    def resolve_source(self, source: Path) -> tuple[Path, str | None]:
        """The dataset folder to read for a ``--source`` the user gave, and a note when it is not
        ``source`` itself (e.g. the one ``maestro-v3.0.0/`` folder inside it); default: itself."""
        return Path(source), None

    def official_documents(self, variant: str) -> dict[str, int] | None:
        """Documents per split of the official release in this layout (e.g. PG-19: 28,602 / 50 /
        100 books), or None when not known. A prepared source with other counts is the user's own
        data, never labelled the paper's."""
        return None

    def scan(self, source: Path) -> dict[str, list[SourceFile]]:
        raise NotImplementedError

    def fit_tokenizer(self, train_files: list[SourceFile], out_dir: Path, options: dict[str, Any]) -> Tokenizer:
        """The tokenizer for this corpus; ``out_dir`` receives its files (e.g. a SentencePiece
        ``.model``); ``options`` come from the preset's data config (e.g. vocabulary size, seed)."""
        return ByteValues()

    def load_tokenizer(self, corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
        """The tokenizer of a prepared corpus (from the files ``fit_tokenizer`` wrote). The default
        loads the default ``fit_tokenizer``'s byte values only: a corpus prepared with another
        tokenizer (a format that overrides ``fit_tokenizer`` but not this) is one DataError line,
        never decoded with the wrong table. The store checks every format's tokenizer against
        the manifest too (``repro/data/store.py``: ``load_tokenizer``)."""
        identity = (manifest.get("tokenizer") or {}).get("identity", ByteValues.identity)
        if identity != ByteValues.identity:
            raise DataError(
                f"{corpus_dir}: prepared with tokenizer '{identity}', which {type(self).__name__} cannot load "
                "(it defines fit_tokenizer but no load_tokenizer)"
            )
        return ByteValues()

    def read(self, f: SourceFile, tokenizer: Tokenizer) -> Iterator[RawDoc]:
        raise NotImplementedError

    def demo(self, out: Path) -> Path:
        """Write demo raw data in the official layout under ``out``; returns the source dir."""
        raise NotImplementedError

    def tokens(self, content: np.ndarray, data_cfg: Any) -> np.ndarray:
        """The model's tokens of one stored document: SOS, content + NUM_RESERVED, EOS."""
        c = np.asarray(content, np.int32) + NUM_RESERVED
        return np.concatenate([[SOS_ID], c, [EOS_ID]]).astype(np.int32)

    def num_tokens(self, num_content: np.ndarray, data_cfg: Any) -> np.ndarray | None:
        """Token counts of documents with ``num_content`` content ids each, when ``tokens``
        changes lengths in a known way (e.g. a lower image resolution); None: build each."""
        return None

    def augments(self, data_cfg: Any) -> bool:
        """Does ``data_cfg`` ask for training-time augmentation (:meth:`augment`)?"""
        return False

    def augment(self, content: np.ndarray, rng: np.random.Generator, data_cfg: Any, tokenizer: Tokenizer):
        """A training crop's content ids, augmented (e.g. transposed music); may change length.
        ``rng`` is a pure function of (seed, step, row), so batches stay reproducible."""
        return content

    def positions(self, num_tokens: int, data_cfg: Any) -> np.ndarray | None:
        """[num_tokens, P] positions from the data of a document of ``num_tokens`` tokens (as
        returned by ``tokens``), or None for the default 1-based offsets."""
        return None


# ------------------------------------------------------------------ document sources


@dataclass(frozen=True)
class DatasetInfo:
    """What a result row says about its data: never a demo corpus passed off as the paper's."""

    name: str  # e.g. "copy (synthetic)", "ImageNet 64x64 (van den Oord et al. 2016)", "demo: skimage photos"
    variant: str  # e.g. "random_mirrored_256", "png", "demo"
    is_paper_data: bool  # the dataset the paper reports on (a demo corpus never is)
    manifest_hash: str = ""  # sha256 of the prepared corpus's manifest ("" for synthetic data)
    path: str = ""  # where the prepared corpus lives (for messages; not a provenance claim)
    corpus: str = ""  # the prepared corpus's name (e.g. "main": the user's, "demo"); "" for synthetic data
    data_hash: str = ""  # the store's content hash (repro/data/store.py: data_identity); "" for synthetic data

    @property
    def label(self) -> str:
        """``name (variant)``, the variant left out where the name already says it or it is "default"."""
        return dataset_label(self.name, self.variant)


def dataset_label(name: str, variant: str) -> str:
    """How a dataset is shown: ``name (variant)``, without repeating a variant the name already
    holds (e.g. "MAESTRO v3", "ImageNet 64x64 (png)" from older manifests) or a "default" one."""
    if not variant or variant == "default" or f"({variant})" in name or name.endswith(f" {variant}"):
        return name
    return f"{name} ({variant})"


class DocumentSource:
    """Splits of documents (``SOS ... EOS`` token arrays, with optional positions from the data,
    the evaluated targets, a scored subset and a word count). A source is one of two kinds, and
    subclasses :class:`SyntheticSource` or :class:`CorpusSource` (a class that subclasses neither
    is refused when it is defined); ``synthetic`` says which. The eval methods default to the
    corpus ones (``num_documents``, ``document``)."""

    info: DatasetInfo
    vocab_size: int
    synthetic: ClassVar[bool]  # set by the kind: SyntheticSource True, CorpusSource False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not isinstance(getattr(cls, "synthetic", None), bool):
            raise TypeError(
                f"{cls.__name__}: a DocumentSource is a SyntheticSource or a CorpusSource (repro/data/source.py); "
                "subclass one of them"
            )

    def num_documents(self, split: str) -> int:
        raise NotImplementedError

    def document(self, split: str, i: int) -> Document:
        raise NotImplementedError

    # ---- evaluation
    def eval_documents(self, split: str, num: int = 0) -> Sequence[Document]:
        """The first ``num`` (0 = all) documents of ``split``, built lazily one at a time."""
        n = self.num_documents(split)
        return _LazyDocs(self, split, min(num, n) if num else n)

    def data_hash(self, split: str, num: int = 0) -> str:
        """sha256 identifying the data a result was computed on."""
        return self.info.manifest_hash[:16]


class SyntheticSource(DocumentSource):
    """A synthetic stream: ``generate`` draws fresh training documents from the batch's rng (so a
    batch is a pure function of the seed and step); the held-out splits are fixed documents
    (``eval_documents``, usually overridden: a synthetic split has no finite corpus behind it)."""

    synthetic: ClassVar[bool] = True

    def generate(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` fresh training documents of equal length [n, T] (and positions [n, T, P] or None)."""
        raise NotImplementedError


class CorpusSource(DocumentSource):
    """A finite corpus: ``num_documents`` / ``document`` per split, and the training split read
    crop by crop (``train_lengths``, ``train_slice``)."""

    synthetic: ClassVar[bool] = False
    augments: bool = False  # training crops are augmented (train_slice with an rng)

    def train_lengths(self) -> np.ndarray:
        """Token count of every training document (SOS and EOS included)."""
        raise NotImplementedError

    def train_slice(
        self, i: int, start: int, stop: int, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens ``start:stop`` of training document ``i`` (and their positions [n, P] or None);
        with ``rng``, augmented (``augments``), possibly to another length."""
        raise NotImplementedError


class _LazyDocs(Sequence):
    def __init__(self, source: DocumentSource, split: str, n: int):
        self.source, self.split, self.n = source, split, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.source.document(self.split, i % self.n)


def sha256_files(paths: list[Path], chunk: int = 1 << 20) -> str:
    """One sha256 over the names (relative order as given) and bytes of ``paths``."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0")
        with open(p, "rb") as f:
            while b := f.read(chunk):
                h.update(b)
    return h.hexdigest()
