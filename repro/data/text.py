"""Text tokenizers behind the :class:`repro.data.source.Tokenizer` interface, and word counting.

Every tokenizer maps text to *content ids* 0..vocab_size-1 (no SOS/EOS, no reserved-id offset;
the pipeline adds those) and back:

    SentencePieceTokenizer   trained here (reproducibly) or a user's ``.model`` (PG-19: 32k unigram)
    WordTokenizer            whitespace words + ``<eos>`` per line, the WikiText-103 convention
    ByteTokenizer            UTF-8 bytes, 256 ids

``count_words`` is the one definition of a "word" used for word-level perplexity (see its
docstring for the PG-19 and WikiText-103 conventions), and ``load_text_tokenizer`` rebuilds the
tokenizer of a prepared corpus from its manifest.
"""

from __future__ import annotations

import io
import math
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from repro.data.source import DataError, Tokenizer

SENTENCEPIECE_MODEL = "sentencepiece.model"
WORD_VOCAB = "vocab.txt"
EOS_WORD = "<eos>"
UNK_WORD = "<unk>"

# SentencePiece skips training "sentences" longer than max_sentence_length bytes; longer lines are
# cut into pieces of at most this many characters first (<= 4 bytes each in UTF-8).
_SP_MAX_SENTENCE_BYTES = 1 << 15
_SP_CHUNK_CHARS = _SP_MAX_SENTENCE_BYTES // 4
# Block size of the deterministic training-text sample (``sample_lines``).
_SAMPLE_BLOCK_BYTES = 1 << 14


class VocabularyTooLarge(DataError):
    """SentencePiece cannot learn ``asked`` pieces from the training text (at most ``limit``)."""

    def __init__(self, asked: int, limit: int):
        super().__init__(f"the training text is too small for {asked} SentencePiece pieces (at most {limit})")
        self.asked, self.limit = asked, limit


_SP_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")

BOM = "\ufeff"


def normalize_text(text: str) -> tuple[str, tuple[str, ...]]:
    """``text`` with a leading byte-order mark removed and CRLF / lone CR line ends made LF, and
    what was changed ("bom", "crlf"): a BOM or Windows line ends must not change token counts (a
    SentencePiece "\\r" piece per line, a BOM glued to the first word). Recorded per document in
    the manifest (``RawDoc.normalized``)."""
    changed = []
    if text.startswith(BOM):
        text = text[1:]
        changed.append("bom")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        changed.append("crlf")
    return text, tuple(changed)


# ------------------------------------------------------------------------------------------------
# Word counting (the denominator of word-level perplexity)


def text_lines(text: str) -> list[str]:
    """The lines of ``text`` as a file iterator yields them: split at ``\\n``; a trailing newline
    does not start another line, a final line without one still is a line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def count_words(text: str, *, eos_per_line: bool = False) -> int:
    """Words of ``text`` in the dataset's own counting, the denominator of word-level perplexity
    (``exp(total NLL of the split / words of the split)``, ``repro.eval.metrics.word_perplexity``).

    A word is a maximal run of non-whitespace characters (Python's ``str.split()``).

    * PG-19 (``eos_per_line=False``): the whitespace-separated words of the book text. The PG-19
      README (Rae et al. 2020, github.com/google-deepmind/pg19) defines word-level perplexity as
      the total likelihood divided by the number of tokens of its statistics table (train
      1,973,136,207, validation 3,007,061, test 6,966,499 words) without stating the procedure;
      whitespace splitting is the standard reading. Report on the full official splits with those
      totals when they differ from this count.
    * WikiText-103 (``eos_per_line=True``): the whitespace-separated tokens of every line plus one
      ``<eos>`` per line, blank lines included. This is the stream whose mean NLL Transformer-XL
      (kimiyoung/transformer-xl ``utils/vocabulary.py``: ``line.strip().split() + ['<eos>']`` for
      every line of ``wiki.*.tokens``) and the adaptive-input models report as perplexity, so our
      word-level perplexity is comparable with theirs. Lines are ``\\n``-separated (see
      ``text_lines``).
    """
    n = len(text.split())
    if eos_per_line:
        n += len(text_lines(text))
    return n


# ------------------------------------------------------------------------------------------------
# Deterministic training-text sampling


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def sample_lines(paths: list[Path], max_bytes: int | None, seed: int) -> Iterator[str]:
    """The lines of ``paths`` (UTF-8 text files), or, when they hold more than ``max_bytes``, a
    deterministic sample of about ``max_bytes``: the files are cut into 16 KiB blocks (in the
    given order), ``seed`` picks ``ceil(max_bytes / 16 KiB)`` blocks uniformly without
    replacement, and each picked block contributes the whole lines that start in it. Only the
    picked blocks are read, so bounding an 11 GB corpus costs a few seeks per block."""
    paths = [Path(p) for p in paths]
    sizes = [p.stat().st_size for p in paths]
    total = sum(sizes)
    if not max_bytes or total <= max_bytes:
        for p in paths:
            yield from _file_lines(p)
        return
    B = _SAMPLE_BLOCK_BYTES
    nblocks = np.array([max(1, math.ceil(s / B)) for s in sizes], np.int64)
    first = np.concatenate([[0], np.cumsum(nblocks)])
    k = min(int(first[-1]), math.ceil(max_bytes / B))
    chosen = np.sort(np.random.default_rng(seed).choice(int(first[-1]), size=k, replace=False))
    file_of = np.searchsorted(first, chosen, side="right") - 1
    for fi in np.unique(file_of):
        p = paths[fi]
        with open(p, "rb") as f:
            for b in chosen[file_of == fi] - first[fi]:
                start = int(b) * B
                f.seek(start)
                data = f.read(B)
                if len(data) == B and not data.endswith(b"\n"):  # finish the line crossing the block end
                    while more := f.read(4096):
                        j = more.find(b"\n")
                        data += more if j < 0 else more[: j + 1]
                        if j >= 0:
                            break
                if start > 0:  # a line that started in the previous block belongs to that block
                    f.seek(start - 1)
                    if f.read(1) != b"\n":
                        cut = data.find(b"\n")
                        data = b"" if cut < 0 else data[cut + 1 :]
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{p}: not UTF-8 text ({e.reason} near byte {start + e.start})") from None
                yield from text_lines(normalize_text(text)[0])


def _file_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file (without their line end), streamed, as ``normalize_text`` reads
    it: no leading byte-order mark, CRLF / CR line ends."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for i, line in enumerate(f):
                if i == 0 and line.startswith(BOM):
                    line = line[1:]
                yield line.rstrip("\r\n") if line.endswith(("\n", "\r")) else line
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _texts_to_lines(texts: Iterable[str | Path]) -> Iterator[str]:
    for t in texts:
        yield from _file_lines(t) if isinstance(t, Path) else text_lines(t)


# ------------------------------------------------------------------------------------------------
# Tokenizers


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: 256 content ids (259 model ids with the pipeline's 3 reserved ones)."""

    identity = "utf8-bytes:256"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).copy()

    def decode(self, content: np.ndarray) -> str:
        return bytes(np.asarray(content, np.uint8).tolist()).decode("utf-8", errors="replace")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model. Models trained by :meth:`train` have no BOS/EOS/PAD pieces (the
    pipeline adds its own), byte fallback (every text is representable), the identity
    normalisation without dummy prefix or whitespace folding, and ``"\\n"`` as a piece of its
    own: ``decode(encode(text)) == text`` for every text without U+2581 (SentencePiece's own
    space symbol, which decodes as a space). Ids are 0..V-1: 0 is ``<unk>`` (never produced with
    byte fallback), 1 is ``"\\n"``, 2..257 the bytes, then the learned pieces.

    A user's ``.model`` (``load``) keeps its own ids; its control pieces are never produced by
    ``encode``, so they are unused content ids."""

    def __init__(self, model_path: Path):
        import sentencepiece as spm

        self.path = Path(model_path)
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as e:
            raise DataError(f"{self.path}: not a SentencePiece model ({e})") from None
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(self.path.read_bytes())
        kind = pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type).lower()
        self.vocab_size = int(self._sp.get_piece_size())
        self.identity = f"sentencepiece:{kind}:{self.vocab_size}"

    @classmethod
    def load(cls, path: Path | str) -> SentencePieceTokenizer:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"SentencePiece model {p} does not exist")
        return cls(p)

    @classmethod
    def train(
        cls,
        texts: Iterable[str | Path],
        out_dir: Path,
        vocab_size: int,
        seed: int = 0,
        model_type: str = "unigram",
        *,
        max_train_bytes: int | None = None,
        num_threads: int = 1,
        character_coverage: float = 0.9995,
    ) -> SentencePieceTokenizer:
        """Train a model on ``texts`` (strings, or paths of UTF-8 files) and write
        ``out_dir/sentencepiece.model``.

        Reproducible: the same input, seed and options give a byte-identical model. The trainer
        sees the lines exactly in the given order (``input_sentence_size=0``, no shuffling of its
        own); when the paths hold more than ``max_train_bytes``, ``sample_lines`` draws a seeded
        sample first (strings are never sampled). ``num_threads`` changes the floating-point
        summation order, so it is part of the recipe (the default 1 is the same on every machine).
        """
        import sentencepiece as spm

        texts = list(texts)
        if max_train_bytes and texts and all(isinstance(t, Path) for t in texts):
            lines: Iterable[str] = sample_lines(texts, max_train_bytes, seed)  # type: ignore[arg-type]
        else:
            lines = _texts_to_lines(texts)

        def sentences() -> Iterator[str]:
            for line in lines:
                for i in range(0, max(len(line), 1), _SP_CHUNK_CHARS):
                    chunk = line[i : i + _SP_CHUNK_CHARS]
                    if chunk:
                        yield chunk

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = io.BytesIO()
        spm.set_random_generator_seed(int(seed))
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=sentences(),
                model_writer=model,
                model_type=model_type,
                vocab_size=int(vocab_size),
                character_coverage=character_coverage,
                byte_fallback=True,
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                split_digits=False,
                user_defined_symbols=["\n"],
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                max_sentence_length=_SP_MAX_SENTENCE_BYTES,
                num_threads=int(num_threads),
                minloglevel=2,
            )
        except RuntimeError as e:
            if m := _SP_TOO_HIGH.search(str(e)):
                raise VocabularyTooLarge(int(m.group(1)), int(m.group(2))) from None
            raise DataError(f"SentencePiece training failed (vocab_size={vocab_size}): {e}") from None
        if not model.getvalue():
            raise DataError("SentencePiece training produced no model (is the training text empty?)")
        path = out_dir / SENTENCEPIECE_MODEL
        path.write_bytes(model.getvalue())
        return cls(path)

    def files(self) -> list[Path]:
        return [self.path]

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), np.int32)

    def decode(self, content: np.ndarray) -> str:
        return self._sp.decode([int(i) for i in np.asarray(content).ravel()])


class WordTokenizer(Tokenizer):
    """Word-level tokens, the standard WikiText-103 language-modelling setup (Transformer-XL's
    ``Vocab(special=['<eos>'], lower_case=False)``): every line is ``line.split()`` followed by
    ``<eos>`` (blank lines included); the vocabulary is ``<eos>`` (id 0) followed by every word of
    the training split sorted by count (descending) then lexicographically (deterministic, unlike
    ``Counter.most_common`` ties), with ``<unk>`` appended when the training text has none; words
    not in the vocabulary map to ``<unk>`` (WikiText-103's own ``<unk>`` is an ordinary word of its
    train split). On the official ``wiki.train.tokens`` this gives the standard 267,735 ids, which
    need 32 bits. Saved as ``vocab.txt``: one ``word<TAB>count`` line per id."""

    def __init__(self, words: list[str], counts: list[int] | None = None, path: Path | None = None):
        if len(set(words)) != len(words):
            raise DataError(f"{path or 'word vocabulary'}: duplicate words")
        if EOS_WORD not in words or UNK_WORD not in words:
            raise DataError(f"{path or 'word vocabulary'}: must contain {EOS_WORD} and {UNK_WORD}")
        self.words = list(words)
        self.counts = list(counts) if counts is not None else [0] * len(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.eos_id, self.unk_id = self.index[EOS_WORD], self.index[UNK_WORD]
        self.vocab_size = len(self.words)
        self.identity = f"word:{self.vocab_size}"
        self.path = path

    @classmethod
    def train(cls, texts: Iterable[str | Path], out_dir: Path, min_count: int = 1) -> WordTokenizer:
        """The vocabulary of ``texts`` (strings or UTF-8 files): every word seen at least
        ``min_count`` times (1: all of them); written to ``out_dir/vocab.txt``."""
        counter: Counter[str] = Counter()
        n_lines = 0
        for line in _texts_to_lines(texts):
            counter.update(line.split())
            n_lines += 1
        counter.pop(EOS_WORD, None)  # the line-end symbol is counted by lines, not as a word
        words = sorted((w for w, c in counter.items() if c >= min_count), key=lambda w: (-counter[w], w))
        counts = [counter[w] for w in words]
        if UNK_WORD not in counter or counter[UNK_WORD] < min_count:
            words.append(UNK_WORD)
            counts.append(sum(c for c in counter.values() if c < min_count))
        tok = cls([EOS_WORD, *words], [n_lines, *counts])
        tok.save(Path(out_dir))
        return tok

    def save(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / WORD_VOCAB
        self.path.write_text("".join(f"{w}\t{c}\n" for w, c in zip(self.words, self.counts, strict=True)))
        return self.path

    @classmethod
    def load(cls, path: Path | str) -> WordTokenizer:
        p = Path(path)
        words, counts = [], []
        for i, line in enumerate(_read_text(p).split("\n")[:-1]):
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1].isdigit():
                raise DataError(f"{p}:{i + 1}: expected 'word<TAB>count'")
            words.append(parts[0])
            counts.append(int(parts[1]))
        return cls(words, counts, path=p)

    def files(self) -> list[Path]:
        return [self.path] if self.path else []

    def encode(self, text: str) -> np.ndarray:
        get, unk, eos = self.index.get, self.unk_id, self.eos_id
        ids: list[int] = []
        for line in text_lines(text):
            ids.extend(get(w, unk) for w in line.split())
            ids.append(eos)
        return np.asarray(ids, np.int32)

    def decode(self, content: np.ndarray) -> str:
        """Words joined by spaces, ``<eos>`` as a line end (the original spacing is not kept)."""
        out, line = [], []
        for i in np.asarray(content).ravel().tolist():
            if i == self.eos_id:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(self.words[i])
        if line:
            out.append(" ".join(line))
        return "".join(out)


# ------------------------------------------------------------------------------------------------
# Choosing / rebuilding a tokenizer from preset options and manifests


def fit_text_tokenizer(
    kind: str, train_paths: list[Path], out_dir: Path, options: dict[str, Any], *, default_vocab: int = 32000
) -> Tokenizer:
    """The tokenizer named by ``kind``: "sentencepiece" (trained on ``train_paths``; options
    ``vocab_size``, ``seed``, ``model_type``, ``max_train_bytes``, ``num_threads``), "word"
    (option ``min_count``), "bytes", or a path to a user ``.model`` (copied into ``out_dir``)."""
    out_dir = Path(out_dir)
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "word":
        return WordTokenizer.train(train_paths, out_dir, min_count=int(options.get("min_count", 1)))
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(
            train_paths,
            out_dir,
            vocab_size=int(options.get("vocab_size", default_vocab)),
            seed=int(options.get("seed", 0)),
            model_type=str(options.get("model_type", "unigram")),
            max_train_bytes=options.get("max_train_bytes", 100_000_000),
            num_threads=int(options.get("num_threads", 1)),
        )
    src = Path(kind).expanduser()
    if kind.endswith(".model") or src.is_file():
        if not src.is_file():
            raise DataError(f"SentencePiece model {src} does not exist")
        out_dir.mkdir(parents=True, exist_ok=True)
        dst = out_dir / SENTENCEPIECE_MODEL
        shutil.copyfile(src, dst)
        return SentencePieceTokenizer.load(dst)
    raise DataError(f"unknown tokenizer '{kind}' (expected sentencepiece, word, bytes or a path to a .model file)")


def load_text_tokenizer(corpus_dir: Path, manifest: dict[str, Any]) -> Tokenizer:
    """The tokenizer of a prepared corpus, from ``manifest["tokenizer"]`` (identity, files
    relative to ``corpus_dir``); DataError when its files are missing or do not match the hash."""
    corpus_dir = Path(corpus_dir)
    info = manifest.get("tokenizer") or {}
    identity = str(info.get("identity", ""))
    files = [corpus_dir / f for f in info.get("files", [])]

    def find(name: str) -> Path:
        for f in files:
            if f.name == name:
                if not f.is_file():
                    raise DataError(f"{f} is missing (tokenizer of {corpus_dir})")
                return f
        raise DataError(f"{corpus_dir}: the manifest lists no tokenizer file {name}")

    tok: Tokenizer
    if identity.startswith("sentencepiece:"):
        tok = SentencePieceTokenizer.load(find(SENTENCEPIECE_MODEL))
    elif identity.startswith("word:"):
        tok = WordTokenizer.load(find(WORD_VOCAB))
    elif identity == ByteTokenizer.identity:
        tok = ByteTokenizer()
    else:
        raise DataError(f"{corpus_dir}: unknown tokenizer identity '{identity}'")
    if tok.identity != identity or ("hash" in info and tok.hash() != info["hash"]):
        raise DataError(f"{corpus_dir}: tokenizer files do not match the manifest (damaged or modified)")
    return tok
