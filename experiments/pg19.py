"""Paper Section 5.3: PG-19 (Project Gutenberg books), word-level perplexity.

The paper's numbers (as quoted by later papers, docs/paper_numbers.md §1.3): **test 28.9 /
validation 45.9** word-level perplexity, 974.6M parameters, SentencePiece 32k, context 2048;
baselines Transformer-XL 36.3 / 45.5 and Compressive Transformer 33.6 / 43.4 (test / validation).
Word-level perplexity = exp(total NLL of the split's tokens / the split's words), words counted
as whitespace-separated words of the book text (``repro/data/text.py``: ``count_words``).

Presets
-------
paper            as close as the sources allow (every value below marked [S-AI] or [I] is a lead,
                 not a published config; docs/deviations.md): 60 latent layers of width 1024, 1024
                 latents, a 4096-wide input embedding [S-AI], 128 cross-attend heads [S-AI],
                 cross-attend dropout 0.875 [S-AI], context 2048 [S-paper], rotary positions [I],
                 SentencePiece 32k trained on the training books [I: the paper's own model is not
                 public], batch 2048 [S-AI], Adam 3e-4 constant after 10k warm-up [I], 200k steps
                 [S-AI]. ~974.2M parameters (paper 974.6M: within 0.05 %).
cpu              Jane Austen's six novels in the PG-19 layout (``repro data demo pg19``: four train,
                 one validation, one test), SentencePiece 4096, context 512, 128 latents, width 256, 3
                 layers: learns real text on 2 CPU cores in well under 30 minutes. Reported beside the
                 unigram baseline of the training split and ``cpu_transformer``.
cpu_transformer  the decoder-only Transformer baseline of ``cpu`` (M = N = 512, 4 layers), same steps.
smoke            tiny, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from repro.baseline import as_transformer
from repro.config import ACCELERATOR_DEFAULTS, Experiment, OptimConfig, TrainConfig
from repro.data import pg19
from repro.section import SMOKE_OPTIM, SMOKE_TRAIN, PaperNumber
from repro.text_section import TextData, TextSection, text_model

NAME = "pg19"


@dataclass(frozen=True)
class PG19Data(TextData, section=NAME):
    pass


PRESETS: dict[str, Experiment] = {
    "paper": Experiment(
        section=NAME,
        preset="paper",
        scale="paper",
        model=text_model(
            32000,
            max_context=2048,
            num_latents=1024,
            d_model=1024,
            d_input=4096,
            num_layers=60,
            cross_heads=128,
            self_heads=16,
            dropout=0.1,
            cross_dropout=0.875,
            **ACCELERATOR_DEFAULTS,
        ),  # fmt: skip
        data=PG19Data(corpus="main", vocab_size=32000),
        optim=OptimConfig(lr=3e-4, warmup_steps=10_000, schedule="constant"),
        train=TrainConfig(steps=200_000, batch_size=2048, log_every=100, eval_every=10_000, checkpoint_every=5000),
        description="PG-19 model as the sources compose it (974.2M parameters; several values are leads)",
    ),
    "cpu": Experiment(
        section=NAME,
        preset="cpu",
        scale="cpu",
        model=text_model(
            4096, max_context=512, num_latents=128, d_model=256, num_layers=3, cross_heads=4, self_heads=4, dropout=0.0
        ),  # fmt: skip
        data=PG19Data(corpus="auto", vocab_size=4096, max_train_bytes=10_000_000),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, schedule="cosine", decay_steps=1500),
        train=TrainConfig(steps=1500, batch_size=16, log_every=20, eval_every=500, checkpoint_every=500),
        description="Jane Austen's novels (demo corpus) on 2 CPU cores; beside unigram and cpu_transformer",
    ),
    "smoke": Experiment(
        section=NAME,
        preset="smoke",
        scale="smoke",
        model=text_model(
            512, max_context=32, num_latents=8, d_model=32, num_layers=1, cross_heads=2, self_heads=2, dropout=0.0
        ),  # fmt: skip
        data=PG19Data(
            corpus="auto", vocab_size=512, max_train_bytes=300_000, eval_examples=1, prompt_tokens=16, sample_tokens=8
        ),  # fmt: skip
        optim=SMOKE_OPTIM,
        train=SMOKE_TRAIN,
        description="tiny, for tests",
    ),
}
PRESETS["cpu_transformer"] = as_transformer(PRESETS["cpu"])


class PG19Section(TextSection):
    name = NAME
    title = "PG-19 (paper §5.3)"
    data_config = PG19Data
    raw_format = pg19.FORMAT
    dataset_name = "PG-19"
    demo_name = "demo: Jane Austen's six novels (Debian r-cran-janeaustenr), not PG-19"
    prepare_preset = "paper"
    paper_numbers = (
        PaperNumber("Table 4", "Perceiver AR", "word_perplexity", "perplexity", "test", 28.9, "[S-paper]",
                    preset="paper", note="MEGALODON Table 5; 974.6M parameters, context 2048"),
        PaperNumber("Table 4", "Perceiver AR", "word_perplexity", "perplexity", "validation", 45.9, "[S-paper]",
                    preset="paper"),
        PaperNumber("Table 4", "Transformer-XL", "word_perplexity", "perplexity", "test", 36.3, "[S-paper]"),
        PaperNumber("Table 4", "Transformer-XL", "word_perplexity", "perplexity", "validation", 45.5, "[S-paper]"),
        PaperNumber("Table 4", "Compressive Transformer", "word_perplexity", "perplexity", "test", 33.6, "[S-paper]"),
        PaperNumber("Table 4", "Compressive Transformer", "word_perplexity", "perplexity", "validation", 43.4,
                    "[S-paper]"),
    )  # fmt: skip


SECTION = PG19Section(PRESETS, "cpu")
