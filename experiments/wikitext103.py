"""Paper Section 5.5: WikiText-103, word-level perplexity.

The sources disagree on the paper's number (docs/paper_numbers.md §1.5): test perplexity 18.4
(paperswithcode), 18.25 with validation 17.58 (wizwand), 18.35 at context 2048 (an AI note); all
are kept, each with its source. 358M parameters; tokenizer and architecture not found. Word-level
perplexity = exp(total NLL / words), words counted as WikiText's word tokens plus one ``<eos>`` per
line (the Transformer-XL stream; ``repro/data/text.py``), with the word-level tokenizer (vocabulary
from the training split) by default: the paper's own tokenizer is unknown (a config value,
``data.tokenizer``; docs/deviations.md).

Presets
-------
paper            a composition, not a published config: word-level vocabulary of the training split
                 (267,735 words in WikiText-103), context 2048 [S-AI], 1024 latents, 16 layers of width
                 1024 [I]; the dry-run parameter count does not reproduce 358M (the vocabulary alone
                 holds 2 x 274M in untied embedding and logits layers), see docs/deviations.md.
cpu              106 real Wikipedia articles from the gensim wheel's test data in the WikiText-103
                 format (``repro data demo wikitext103``), word-level vocabulary of the demo train
                 split, context 512, 128 latents, width 256, 3 layers; beside the unigram baseline
                 and ``cpu_transformer``.
cpu_transformer  the decoder-only Transformer baseline of ``cpu``, same steps.
smoke            tiny, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from repro.baseline import as_transformer
from repro.config import ACCELERATOR_DEFAULTS, Experiment, OptimConfig, TrainConfig
from repro.data import wikitext103
from repro.section import SMOKE_OPTIM, SMOKE_TRAIN, PaperNumber
from repro.text_section import TextData, TextSection, text_model

NAME = "wikitext103"
WT103_WORDS = 267_735  # the WikiText-103 training vocabulary (Merity et al. 2016)


@dataclass(frozen=True)
class WikiTextData(TextData, section=NAME):
    tokenizer: str = "word"


PRESETS: dict[str, Experiment] = {
    "paper": Experiment(
        section=NAME,
        preset="paper",
        scale="paper",
        model=text_model(
            WT103_WORDS,
            max_context=2048,
            num_latents=1024,
            d_model=1024,
            num_layers=16,
            cross_heads=16,
            self_heads=16,
            dropout=0.1,
            **ACCELERATOR_DEFAULTS,
        ),  # fmt: skip
        data=WikiTextData(corpus="main"),
        optim=OptimConfig(lr=3e-4, warmup_steps=10_000, schedule="constant"),
        train=TrainConfig(steps=200_000, batch_size=256, log_every=100, eval_every=10_000, checkpoint_every=5000),
        description="a composition (architecture not published); word-level vocabulary",
    ),
    "cpu": Experiment(
        section=NAME,
        preset="cpu",
        scale="cpu",
        # The demo's word vocabulary (12,319 words with the <unk> rule of repro/data/wikitext103.py)
        # is read from the prepared corpus: model.vocab_size must hold it (checked at start).
        model=text_model(
            12_400,
            max_context=512,
            num_latents=128,
            d_model=256,
            num_layers=3,
            cross_heads=4,
            self_heads=4,
            dropout=0.0,
        ),  # fmt: skip
        data=WikiTextData(corpus="auto"),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, schedule="cosine", decay_steps=1500),
        train=TrainConfig(steps=1500, batch_size=16, log_every=20, eval_every=500, checkpoint_every=500),
        description="Wikipedia articles from gensim (demo corpus) on 2 CPU cores; beside unigram, cpu_transformer",
    ),
    "smoke": Experiment(
        section=NAME,
        preset="smoke",
        scale="smoke",
        model=text_model(
            12_400, max_context=32, num_latents=8, d_model=32, num_layers=1, cross_heads=2, self_heads=2, dropout=0.0
        ),  # fmt: skip
        data=WikiTextData(corpus="auto", eval_examples=1, prompt_tokens=16, sample_tokens=8),
        optim=SMOKE_OPTIM,
        train=SMOKE_TRAIN,
        description="tiny, for tests",
    ),
}
PRESETS["cpu_transformer"] = as_transformer(PRESETS["cpu"])


class WikiTextSection(TextSection):
    name = NAME
    title = "WikiText-103 (paper §5.5)"
    data_config = WikiTextData
    raw_format = wikitext103.FORMAT
    dataset_name = "WikiText-103"
    demo_name = "demo: 106 Wikipedia articles from gensim's test data, not WikiText-103"
    prepare_preset = "paper"
    paper_numbers = (
        PaperNumber("Table 5", "Perceiver AR", "word_perplexity", "perplexity", "test", 18.4, "[S-agg] paperswithcode",
                    preset="paper", note="358M parameters; the sources disagree"),
        PaperNumber("Table 5", "Perceiver AR", "word_perplexity", "perplexity", "test", 18.25, "[S-agg] wizwand",
                    preset="paper"),
        PaperNumber("Table 5", "Perceiver AR", "word_perplexity", "perplexity", "validation", 17.58,
                    "[S-agg] wizwand", preset="paper"),
        PaperNumber("Table 5", "Perceiver AR", "word_perplexity", "perplexity", "test", 18.35, "[S-AI]",
                    preset="paper", note="context 2048"),
    )  # fmt: skip


SECTION = WikiTextSection(PRESETS, "cpu")
