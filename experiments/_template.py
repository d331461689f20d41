"""A template section: copy this file to ``experiments/<name>.py`` (no leading underscore: files
starting with ``_`` are never discovered, which is why this one is not a section) and edit it.

What it defines is all a section needs (docs/adding_a_section.md): a name, a typed data config,
a headline metric, a :class:`~repro.data.source.DocumentSource` and presets. Every other hook of
:class:`repro.section.Section` has a working default; the optional ones are listed at the end of
the class with what their defaults do. This one trains on a synthetic task (count up by one from a
random byte value, modulo 256), so ``repro run <name> --preset smoke`` works with no data at all;
a section on a real corpus subclasses :class:`repro.section.CorpusSection` and gives a
``raw_format`` from ``repro/data/<name>.py`` instead of ``source`` (see the doc).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.config import ConfigError, DataConfig, Experiment, ModelConfig
from repro.data.source import ByteValues, DatasetInfo, SyntheticSource
from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.eval.protocols import Document
from repro.section import SMOKE_OPTIM, SMOKE_TRAIN, Metric, Section

NAME = "template"  # the CLI name: `repro run template`; also the data config's registration


@dataclass(frozen=True)
class TemplateData(DataConfig, section=NAME):
    """The section's own data settings (typed; they round-trip through a run's config.json and
    ``--set data.<field>=...`` is checked against them). Shared fields: ``DataConfig``."""

    length: int = 30  # content tokens per document (SOS and EOS come on top)
    eval_seed: int = 1
    eval_examples: int = 16  # held-out documents evaluated (a synthetic split: must be >= 1)

    def validate(self) -> None:
        super().validate()
        if self.length < 2:
            raise ConfigError(f"data.length must be >= 2, got {self.length}")
        if self.eval_examples < 1:
            raise ConfigError(f"data.eval_examples must be >= 1 (held-out documents), got {self.eval_examples}")


class CountingSource(SyntheticSource):
    """Synthetic documents SOS, v, v + 1, ... (mod 256), EOS with v uniform: the training stream is
    a pure function of the batch's rng (``generate``), the held-out splits fixed by ``eval_seed``.
    ``tokenizer`` (optional) is what the default ``prompts`` / ``write_samples`` encode and decode
    with: byte values here, so samples are shown as lists of values."""

    vocab_size = 256 + NUM_RESERVED
    tokenizer = ByteValues()

    def __init__(self, length: int, eval_seed: int):
        self.length, self.eval_seed = length, eval_seed
        self.info = DatasetInfo("counting (synthetic)", f"length {length}", is_paper_data=False)

    def _documents_BxT(self, rng: np.random.Generator, n: int) -> np.ndarray:
        first_B = rng.integers(0, 256, size=n)
        values_BxN = (first_B[:, None] + np.arange(self.length)) % 256
        sos, eos = np.full((n, 1), SOS_ID), np.full((n, 1), EOS_ID)
        return np.concatenate([sos, values_BxN + NUM_RESERVED, eos], axis=1).astype(np.int32)

    def generate(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
        return self._documents_BxT(rng, n), None  # no positions from the data: 1-based offsets

    def eval_documents(self, split: str, num: int = 0) -> list[Document]:
        stream = {"train": 1, "validation": 2, "test": 3}[split]  # the held-out splits differ
        return [Document(t) for t in self._documents_BxT(np.random.default_rng([self.eval_seed, stream]), num or 1)]

    def data_hash(self, split: str, num: int = 0) -> str:
        """What the result rows name as the evaluated data (a corpus: its store's hash)."""
        docs = np.stack([d.tokens for d in self.eval_documents(split, num)])
        return hashlib.sha256(docs.tobytes()).hexdigest()[:16]


def _model(**kw) -> ModelConfig:
    return ModelConfig(vocab_size=CountingSource.vocab_size, **kw)


PRESETS: dict[str, Experiment] = {
    # Every section has a "smoke" preset (tests, `make smoke`); a "cpu" preset that learns in
    # minutes on a laptop; "paper" presets with the paper's hyper-parameters where it has any.
    "smoke": Experiment(
        section=NAME,
        preset="smoke",
        scale="smoke",
        model=_model(max_context=32, num_latents=16, d_model=32, num_layers=1, cross_heads=2, self_heads=2),
        data=TemplateData(),
        optim=SMOKE_OPTIM,
        train=SMOKE_TRAIN,
        description="tiny, for tests",
    ),
}
DEFAULT_PRESET = "smoke"


class TemplateSection(Section):
    # ---- required
    name = NAME
    data_config = TemplateData
    # The number `repro run` prints, the report tabulates and the best checkpoint is chosen by
    # (in its direction: higher_is_better=True for an accuracy). Its key is a metric of
    # repro/eval/evaluate.py (nats_per_token, token_accuracy, bits_per_dim, word_perplexity, ...).
    headline = Metric("token_accuracy", "next-token accuracy", "fraction", ".2%", higher_is_better=True)

    def source(self, exp: Experiment, data_dir: Path | None = None, *, log=None) -> CountingSource:
        return CountingSource(exp.data.length, exp.data.eval_seed)

    # ---- optional (delete what you do not need; the defaults are in repro/section.py)
    title = "Template: counting (not a paper section)"  # the report's heading (default: the name)
    # paper_numbers = (PaperNumber(...),)     the paper's numbers the report compares with
    # default_protocol(exp)                   "blocked:<num_latents>"
    # bits_per_dim(exp)                       headline.key == "bits_per_dim" (image sections)
    # stop(exp, eval_metrics)                 never stop early
    # baselines(exp, source, split, num)      none (e.g. a unigram, a chance level)
    # sampling(exp)                           SamplingSpec(): plain sampling, temperature 1
    # prompts(exp, source, num, prompt)       the first held-out documents cut in half
    # write_samples(exp, prompts, ...)        samples.json: prompt / output / truth, decoded
    # figures(rows, out)                      no figures of its own in the report
    # context_plot = True                     headline vs context when runs differ in context
    # summary_lines(metrics)                  nothing after nats/token in `repro run` / `eval`


SECTION = TemplateSection(PRESETS, DEFAULT_PRESET)
