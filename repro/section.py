"""The one interface of a paper section.

A section is one file in ``experiments/`` defining a :class:`Section` subclass and an instance
``SECTION`` of it; ``experiments/__init__.py`` finds every such file (no registry to edit). The
section says what is particular to it: presets, the headline metric, its data (a
:class:`~repro.data.source.DocumentSource`: synthetic, or a corpus prepared by its raw-data
module in ``repro/data/``), its default evaluation protocol, how to sample and how to show
samples, an optional stop rule, simple baselines and the paper's numbers. Everything else
(training, crops, windows, protocols, metrics, results rows, checkpoints) is shared. Only the
name, the data config, the headline and the source are required: every other hook has a working
default (docs/adding_a_section.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from repro.config import ConfigError, DataConfig, Experiment, OptimConfig, TrainConfig
from repro.data.pipeline import Pipeline
from repro.data.source import DataError, DocumentSource, RawFormat
from repro.data.tokens import NUM_RESERVED, SOS_ID

# Every section's smoke preset trains like this: a few steps of a tiny model, for tests.
SMOKE_OPTIM = OptimConfig(lr=3e-3, warmup_steps=5)
SMOKE_TRAIN = TrainConfig(steps=10, batch_size=4, log_every=5, eval_every=10, checkpoint_every=10)


@dataclass(frozen=True)
class Metric:
    """A section's headline metric: key in the evaluation metrics, label, unit, format."""

    key: str  # e.g. "scored_token_accuracy", "bits_per_dim", "word_perplexity"
    label: str  # e.g. "mirrored-half token accuracy"
    unit: str  # e.g. "fraction", "bits/dim", "perplexity", "nats/event"
    fmt: str = ".4f"  # a format spec: ".2%" for fractions, ".3f" for bits/dim
    higher_is_better: bool = False

    def format(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return format(value, self.fmt)


@dataclass(frozen=True)
class PaperNumber:
    """A number from the paper (or a source in docs/paper_numbers.md) this section compares with.

    ``preset``: the preset that reproduces it ("" = none of ours does; e.g. a baseline's row)."""

    table: str  # e.g. "Table 3", "§5.1.1"
    model: str  # e.g. "Perceiver AR", "Sparse Transformer"
    metric: str  # a metric key the section's evaluation emits (tested)
    unit: str
    split: str  # "validation" / "test"
    value: float | None
    source: str  # source tag as in paper.md, e.g. "[P-page]"
    preset: str = ""
    note: str = ""


@dataclass(frozen=True)
class SamplingSpec:
    """How ``repro sample`` generates for a section: default sampler settings, the positions of
    generated tokens (models with positions from the data), and the tokens allowed at each
    position (a jax-traceable, hashable ``allowed(offset_B) -> bool [B, V]``)."""

    defaults: dict[str, Any] = field(default_factory=dict)
    positions_fn: Callable[[np.ndarray], np.ndarray] | None = None
    allowed: Callable | None = None


@dataclass
class Prompts:
    """Prompts for ``repro sample``: token arrays (SOS first), how many tokens to generate, and
    the true continuations where known (shown beside the samples)."""

    tokens: list[np.ndarray]
    num_new: int
    expected: list[np.ndarray | None]
    labels: list[str] = field(default_factory=list)
    source: Any = None  # the DocumentSource they came from (e.g. its tokenizer decodes samples)


class Section:
    """Base class of a paper section (see the module docstring). Subclasses set ``name``,
    ``data_config`` and ``headline`` and implement :meth:`source`; every other hook has a working
    default (docs/adding_a_section.md lists them)."""

    name: ClassVar[str]
    title: ClassVar[str] = ""  # e.g. "ImageNet 64x64 (paper §5.2)"
    data_config: ClassVar[type[DataConfig]] = DataConfig
    headline: ClassVar[Metric]
    raw_format: ClassVar[RawFormat | None] = None  # prepared sections: the raw-layout reader
    paper_numbers: ClassVar[tuple[PaperNumber, ...]] = ()

    def __init__(self, presets: dict[str, Experiment], default_preset: str):
        self.presets = presets
        self.default_preset = default_preset
        for name, exp in presets.items():
            if exp.section != self.name or exp.preset != name:
                raise ValueError(f"preset {name} of {self.name} is labelled {exp.section}/{exp.preset}")
            if type(exp.data) is not self.data_config:
                raise ValueError(f"preset {self.name}/{name}: data is {type(exp.data).__name__}, "
                                 f"not {self.data_config.__name__}")  # fmt: skip
        # The raw format names the section its manifests are written for: the same name, checked.
        fmt = self.raw_format
        if fmt is not None and fmt.section != self.name:
            raise ValueError(f"section {self.name}: its raw_format {type(fmt).__name__} is for section "
                             f"'{fmt.section}' (RawFormat.section must be the section's name)")  # fmt: skip

    # ---------------------------------------------------------------- data
    def source(self, exp: Experiment, data_dir: Path | None = None, *, log: Callable[[str], None] | None = None):
        """The :class:`DocumentSource` a run of ``exp`` trains and evaluates on."""
        raise NotImplementedError

    def pipeline(self, exp: Experiment, source: DocumentSource) -> Pipeline:
        m = exp.model
        if source.vocab_size > m.vocab_size:
            raise ConfigError(
                f"model.vocab_size={m.vocab_size} is smaller than the data's vocabulary ({source.vocab_size})"
            )
        # stride1's shared head window is exact when positions do not move with the window's end.
        share_head = m.positions_from_data or m.position_encoding in ("rotary", "none")
        return Pipeline(
            source, m.max_context, m.num_latents, exp.data.minimum_crop_length, exp.data.train_seed, share_head
        )

    def make_dataset(self, exp: Experiment, data_dir: Path | None = None, *, log=None) -> Pipeline:
        """The run's :class:`Pipeline`: ``pipeline(exp, source(exp))``."""
        return self.pipeline(exp, self.source(exp, data_dir, log=log))

    def prepare_options(self, data_cfg: DataConfig) -> dict[str, Any]:
        """Options a prepared corpus is built with (tokenizer kind and size...): presets with
        different options use different prepared corpora (``repro/data/store.py``)."""
        return {}

    # ---------------------------------------------------------------- evaluation
    def default_protocol(self, exp: Experiment) -> str:
        return f"blocked:{exp.model.num_latents}"

    def bits_per_dim(self, exp: Experiment) -> bool:
        """Report bits per dimension: derived from the headline (image sections' is
        ``bits_per_dim``), so the headline's metric is always one the evaluation emits."""
        return self.headline.key == "bits_per_dim"

    def stop(self, exp: Experiment, eval_metrics: dict[str, Any]) -> bool:
        """Stop training early after this evaluation? (copy: once accuracy reaches a target)."""
        return False

    def baselines(
        self, exp: Experiment, source: DocumentSource, split: str, num: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Simple baselines measured in the same run on the same targets as the model, in the
        headline's unit: ``{name: {"value": v, "description": ..., "eval_tokens": n}}`` (e.g. a
        unigram model of the training split), over the first ``num`` documents of ``split`` (0 =
        all; None = ``data.eval_examples``, what ``repro run`` evaluates). ``eval_tokens``: the
        targets scored, equal to the model's (tested)."""
        return {}

    def resolve(self, exp: Experiment, data_dir: Path | None = None, *, log: Callable[[str], None] | None = None):
        """``exp`` with its data made concrete (a corpus section's ``data.corpus="auto"``)."""
        return exp

    # ---------------------------------------------------------------- sampling
    def sampling(self, exp: Experiment) -> SamplingSpec:
        return SamplingSpec()

    def prompts(self, exp: Experiment, source: DocumentSource, num: int, prompt: str | None) -> Prompts:
        """Default: the first ``num`` documents of ``data.eval_split`` (held out), each cut in half:
        the first half (SOS included) is the prompt, the second half (EOS included) the true
        continuation shown beside the sample. A half longer than the model's context is cut to
        ``max_context`` tokens (the prompt's start and the continuation's start are kept), so a
        sample never takes longer than generating one context. ``prompt``: data the source's
        tokenizer encodes (``source.tokenizer.encode``), continued for as many tokens as it has
        (at most ``max_context``); a source without a tokenizer takes no ``--prompt``."""
        L = exp.model.max_context
        if prompt is not None:
            tokenizer = getattr(source, "tokenizer", None)
            if tokenizer is None:
                raise DataError(f"section '{self.name}' takes no --prompt: its data has no tokenizer to encode one")
            try:
                content = np.asarray(tokenizer.encode(prompt), np.int64).ravel()
            except NotImplementedError as e:
                raise DataError(f"section '{self.name}' takes no --prompt: {e}") from None
            if not len(content):
                raise DataError("the prompt encodes to no tokens")
            tokens = np.concatenate([[SOS_ID], content + NUM_RESERVED]).astype(np.int32)
            return Prompts([tokens], min(len(tokens), L), [None], ["--prompt"], source)
        split = exp.data.eval_split
        docs = source.eval_documents(split, num)
        if not len(docs):
            raise DataError(f"the {split} split has no documents to prompt with")
        tokens, expected, labels = [], [], []
        for i in range(min(num, len(docs))):
            t = docs[i].tokens
            cut = min(len(t) // 2, L)  # >= 1: a document has SOS and at least one target
            tokens.append(t[:cut])
            expected.append(t[cut : cut + L])
            labels.append(f"{split} document {i}")
        return Prompts(tokens, max(len(e) for e in expected), expected, labels, source)

    def write_samples(
        self, exp: Experiment, prompts: Prompts, generated: list[np.ndarray], outdir: Path, settings: dict
    ) -> dict[str, Any]:
        """Default: ``outdir/samples.json``, per sample its label, prompt, output and truth (the
        true continuation, or None), decoded with the source's tokenizer (``source.tokenizer``:
        text for text tokenizers, values for value tokenizers); the model's token ids where the
        source has no tokenizer or its tokenizer's data is not JSON (e.g. MIDI). Returns the
        summary written beside them."""
        from repro.runinfo import write_json_atomic

        decode, decoded_as = sample_decoder(prompts.source)
        rows = []
        for k, (p, g, e) in enumerate(zip(prompts.tokens, generated, prompts.expected, strict=True)):
            label = prompts.labels[k] if k < len(prompts.labels) else f"sample {k}"
            rows.append({"label": label, "prompt": decode(p), "output": decode(g),
                         "truth": None if e is None else decode(e)})  # fmt: skip
        summary = {"section": self.name, "preset": exp.preset, "samples": len(rows), "decoded_as": decoded_as,
                   "settings": settings}  # fmt: skip
        write_json_atomic(outdir / "samples.json", {"summary": summary, "samples": rows})
        return summary

    # ---------------------------------------------------------------- reporting
    # ``repro report`` plots the held-out headline against the model's context for runs that
    # differ in it; off where runs differ along another axis (copy: the task's length).
    context_plot: ClassVar[bool] = True

    def figures(self, rows: list[tuple[Path, dict[str, Any]]], out: Path) -> dict[str, Path]:
        """The section's own figures in ``repro report``: ``rows`` are its result rows (the result
        file, the row: ``repro/results.py``), ``out`` the report's folder; returns ``{heading:
        png}`` for the figures written, each shown under its ``## heading`` with the alt text
        "<section> <file stem, _ as spaces>". Default: none (copy: accuracy vs length)."""
        return {}

    def summary_lines(self, metrics: dict[str, Any]) -> list[str]:
        """Facts of an evaluation's ``metrics`` that ``repro run`` / ``repro eval`` print after
        nats/token and bits/token, each after ", " (copy: the sequence exact match). Default: none."""
        return []

    # ---------------------------------------------------------------- helpers
    def preset(self, name: str | None) -> Experiment:
        name = name or self.default_preset
        if name not in self.presets:
            raise ConfigError(f"unknown preset '{name}' for {self.name} (available: {', '.join(self.presets)})")
        return self.presets[name]


def sample_decoder(source: DocumentSource | None) -> tuple[Callable[[np.ndarray], Any], str]:
    """(decode, name) for samples of ``source``: ``decode`` maps model tokens [T] to JSON data,
    ``name`` is the tokenizer's identity (or "token ids") for the samples' summary. With a
    tokenizer the reserved ids (PAD, EOS, SOS) are dropped and the content ids decoded (a string,
    or a list for array data); token ids where there is no tokenizer, where the tokenizer's data
    is not JSON (e.g. a PrettyMIDI) or where it refuses the ids (e.g. a code of the wrong level)."""
    tokenizer = getattr(source, "tokenizer", None)
    if tokenizer is None:
        return (lambda tokens: np.asarray(tokens).tolist()), "token ids"

    def decode(tokens: np.ndarray) -> Any:
        t = np.asarray(tokens)
        try:
            data = tokenizer.decode(t[t >= NUM_RESERVED] - NUM_RESERVED)
        except (NotImplementedError, ValueError):
            return t.tolist()
        if isinstance(data, str):
            return data
        if isinstance(data, np.ndarray):
            return data.tolist()
        return t.tolist()

    return decode, tokenizer.identity


DEMO_MARKER = "REPRO_DEMO.txt"  # in a demo raw directory: prepared corpora from it are labelled demo
AUTO_CORPUS = "auto"  # data.corpus of the cpu / smoke presets: the user's prepared corpus, else the demo


class CorpusSection(Section):
    """A section that trains on a corpus prepared by ``raw_format`` (``repro data prepare``).

    ``data.corpus`` names the prepared corpus; ``prepare_options`` (from the data config) pick the
    tokenizer, so the store directory is ``<data dir>/<section>/<corpus>-<options>``.

    ``data.corpus="auto"`` (the cpu and smoke presets): the user's corpus ("main", as ``repro data
    prepare SECTION --source DIR --preset P`` writes it) when it is prepared with this preset's
    options, else the demo corpus; the choice is printed (and why: nothing prepared, or prepared
    with other options such as another vocabulary size) and recorded in the run's ``config.json``
    and results. ``--set data.corpus=demo`` / ``=main`` force one. A ``cpu`` or ``smoke`` preset
    whose demo corpus is not prepared yet builds it (the demo raw data, then the real prepare
    code on it) and says so; anything else with nothing prepared stops with one line naming the
    ``repro data prepare`` command."""

    dataset_name: ClassVar[str] = ""  # the paper's dataset, e.g. "PG-19"
    demo_name: ClassVar[str] = ""  # the demo corpus, e.g. "demo: Jane Austen's six novels (janeaustenr)"
    prepare_preset: ClassVar[str] = "paper"  # whose options `repro data prepare` uses by default

    def corpus_dir(self, data_cfg, data_dir: Path | None = None) -> Path:
        from repro.data.store import corpus_key
        from repro.data.store import data_dir as root

        if data_cfg.corpus == AUTO_CORPUS:
            main = self.corpus_dir(dataclasses.replace(data_cfg, corpus="main"), data_dir)
            corpus = "main" if (main / "manifest.json").is_file() else "demo"
            data_cfg = dataclasses.replace(data_cfg, corpus=corpus)
        return root(data_dir) / self.name / corpus_key(data_cfg.corpus, self.prepare_options(data_cfg))

    def resolve(self, exp: Experiment, data_dir: Path | None = None, *, log: Callable[[str], None] | None = None):
        """``data.corpus="auto"`` made concrete (see the class docstring); says which and why."""
        if exp.data.corpus != AUTO_CORPUS:
            return exp
        from repro.data.store import data_dir as root
        from repro.data.store import list_corpora

        say = log or (lambda m: None)
        main = dataclasses.replace(exp.data, corpus="main")
        d = self.corpus_dir(main, data_dir)
        if (d / "manifest.json").is_file() or exp.scale not in ("cpu", "smoke"):
            if (d / "manifest.json").is_file():
                say(f"data: your prepared {self.name} corpus in {d} (--set data.corpus=demo trains on the demo)")
            return dataclasses.replace(exp, data=main)
        preset = f" --preset {exp.preset}" if exp.preset != self.prepare_preset else ""
        want = self.prepare_options(exp.data)
        others = [m for m in list_corpora(root(data_dir)) if (m.get("section"), m.get("corpus")) == (self.name, "main")]
        if others:
            m = others[0]
            have = m["options"]
            keys = [k for k, v in want.items() if k in have and have[k] != v] or [k for k in want if k not in have]
            diff = ", ".join(f"{k} {have.get(k)} (preset {exp.preset}: {want[k]})" for k in keys) or "other options"
            say(f"data: your {self.name} corpus in {m['path']} was prepared with other options ({diff}): "
                f"using the demo corpus; to train on yours: repro data prepare {self.name} "
                f"--source {m['source']['path']}{preset}")  # fmt: skip
        else:
            cmd = f"repro data prepare {self.name} --source DIR{preset}"
            say(f"data: no {self.name} corpus of yours in {root(data_dir) / self.name}: using the demo corpus "
                f"({self.demo_name}); to train on yours: {cmd}")  # fmt: skip
        return dataclasses.replace(exp, data=dataclasses.replace(exp.data, corpus="demo"))

    def check_data(self, data_cfg, manifest: dict[str, Any], where: Path) -> None:
        """DataError when a prepared corpus does not fit the data config (MAESTRO: its version)."""

    def check_source(self, data_cfg, source_dir: Path) -> None:
        """DataError when a raw source does not fit the data config, before anything is read."""

    def data_info(self, exp: Experiment, info):
        """How a run of ``exp`` names its data (ImageNet: the resolution it is downsampled to)."""
        return info

    def source(self, exp: Experiment, data_dir: Path | None = None, *, log: Callable[[str], None] | None = None):
        from repro.data.store import Corpus

        exp = self.resolve(exp, data_dir, log=log)
        d = self.corpus_dir(exp.data, data_dir)
        if not (d / "manifest.json").is_file():
            if exp.data.corpus == "demo" and exp.scale in ("cpu", "smoke"):
                self.prepare_demo(exp.data, data_dir, log=log)
            else:
                preset = f" --preset {exp.preset}" if exp.preset != self.prepare_preset else ""
                what = "the demo corpus" if exp.data.corpus == "demo" else f"the {self.dataset_name} corpus"
                raise DataError(
                    f"{what} is not prepared in {d}; run: repro data prepare {self.name} --source DIR"
                    + (" --demo" if exp.data.corpus == "demo" else "")
                    + preset
                )
        corpus = Corpus(d, self.raw_format, exp.data)
        self.check_data(exp.data, corpus.manifest, d)
        corpus.info = self.data_info(exp, corpus.info)
        return corpus

    def prepare(
        self, data_cfg, source_dir: Path, data_dir: Path | None = None, *, progress=None, warn=None, log=None,
        force: bool = False,
    ):  # fmt: skip
        """Prepare ``source_dir`` (the official raw layout) into this data config's corpus dir.

        Over an existing store: without ``force``, refused (one line) when runs under ``./runs``
        were trained on it; afterwards ``log`` says whether its data changed (runs trained on the
        old data then refuse eval / sample / resume) or not."""
        from repro.data.store import check_source_dir, data_identity, prepare, read_manifest, runs_using
        from repro.data.text import VocabularyTooLarge

        say = log or warn or (lambda m: None)
        source_dir, note = self.raw_format.resolve_source(check_source_dir(source_dir))
        if note:
            say(note)
        if data_cfg.corpus == AUTO_CORPUS:
            data_cfg = dataclasses.replace(data_cfg, corpus="main")
        self.check_source(data_cfg, source_dir)
        out = self.corpus_dir(data_cfg, data_dir)
        old = None
        if (out / "manifest.json").is_file():
            try:
                old = read_manifest(out)
            except DataError:
                pass
            users = runs_using(out)
            if users and not force:
                raise DataError(
                    f"{len(users)} run(s) under runs/ were trained on {out} (e.g. {users[0]}): if "
                    "its data changes they refuse eval, sample, resume; pass --force to prepare again"
                )
        # A demo corpus is labelled as one whatever it is prepared as: `repro data demo` and the
        # automatic demo build leave a marker in the raw data.
        demo = data_cfg.corpus == "demo" or (Path(source_dir) / DEMO_MARKER).is_file()
        try:
            m = prepare(
                self.raw_format, source_dir, out, self.prepare_options(data_cfg), corpus=data_cfg.corpus,
                is_paper_data=not demo and self.is_paper_source(source_dir), is_demo=demo,
                dataset_name=self.demo_name if demo else self.dataset_label(source_dir), on_file=progress, warn=warn,
            )  # fmt: skip
        except VocabularyTooLarge as e:
            raise DataError(self._vocab_hint(e)) from None
        if old is not None:
            a, b = data_identity(old)[:16], data_identity(m)[:16]
            if a == b:
                say(f"prepared {out} again: the same data (data hash {a}); runs trained on it are unaffected")
            else:
                n = len(runs_using(out))
                say(f"replaced {out}: its data changed (data hash {a} -> {b}); runs trained on the old data now "
                    f"refuse eval, sample and resume" + (f" ({n} under runs/)" if n else ""))  # fmt: skip
        return m

    def _vocab_hint(self, e) -> str:
        """SentencePiece's "vocabulary size too high" as one line naming what fits."""
        sizes = {n: getattr(x.data, "vocab_size", 0) for n, x in self.presets.items()
                 if getattr(x.data, "tokenizer", "") == "sentencepiece"}  # fmt: skip
        fits = sorted(((v, n) for n, v in sizes.items() if 0 < v <= e.limit), reverse=True)
        preset = f"--preset {fits[0][1]} (vocab_size {fits[0][0]}) or " if fits else ""
        return (f"the training text is too small for a {e.asked}-piece SentencePiece vocabulary (at most {e.limit}): "
                f"prepare with {preset}--set data.vocab_size=N with N <= {e.limit} (a run then needs the same "
                "data.vocab_size and model.vocab_size=N+3)")  # fmt: skip

    def prepare_demo(self, data_cfg, data_dir: Path | None = None, *, log=None, progress=None):
        from repro.data.store import data_dir as root

        raw = root(data_dir) / self.name / "demo-raw"
        done = raw / ".complete"  # holds the source directory demo() returned (relative to raw)
        if not done.is_file():
            if log:
                log(f"building the {self.name} demo corpus ({self.demo_name}) in {raw}")
            import shutil

            shutil.rmtree(raw, ignore_errors=True)
            src = self.write_demo(raw)
            done.write_text(str(src.relative_to(raw)) + "\n")
        raw = raw / done.read_text().strip()
        if log:
            log(f"preparing the {self.name} demo corpus into {self.corpus_dir(data_cfg, data_dir)}")
        return self.prepare(data_cfg, raw, data_dir, progress=progress, warn=log, force=True)

    def write_demo(self, out: Path) -> Path:
        """The demo raw data under ``out`` (official layout) with the demo marker; returns the
        source directory to prepare."""
        src = Path(self.raw_format.demo(Path(out)))
        (src / DEMO_MARKER).write_text(
            f"{self.demo_name}\nwritten by repro for section {self.name}; not the paper's data\n"
        )
        return src

    def is_paper_source(self, source_dir: Path) -> bool:
        """Is ``source_dir`` the dataset the paper reports on? (ImageNet: not the npz variant.)"""
        return True

    def dataset_label(self, source_dir: Path) -> str:
        """The dataset's name in the manifest (its layout variant is recorded beside it)."""
        return self.dataset_name
