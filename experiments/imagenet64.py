"""Paper Section 5.2: ImageNet 64x64, bits/dim.

The paper: **3.40 bits/dim** on the validation set of van den Oord et al.'s downsampled ImageNet
after 750k steps with the 770M-parameter ``imagenet_w_positions`` model (Table 3: Sparse
Transformer 3.44, Routing Transformer 3.43, Combiner 3.42, Gated PixelCNN 3.57, PixelRNN 3.63).
Images are 12,288 sub-pixel tokens (R, G, B interleaved in raster order, value v -> token v + 3)
after SOS, each with a learned (x, y, channel) position (``repro/data/imagenet64.py``). bits/dim =
nats per sub-pixel / ln 2 over the 12,288 sub-pixels (EOS excluded); the paper's protocol is
``blocked:512`` (the official sweep's ``eval_block_size=512`` with 1024 latents).

Presets
-------
paper   the official ``imagenet_w_positions`` config verbatim (context 12,416, 1024 latents, 60
        layers of width 1024, 16 heads, batch 2048, constant LR 3e-4 after 10k warm-up, dropout
        0.1, 750k steps): 770,094,339 parameters. Needs ImageNet 64x64 prepared with
        ``repro data prepare imagenet64 --source DIR`` and an accelerator pod.
cpu     real learning on the demo photos (scikit-image's photos cut into 64x64 tiles,
        ``repro data demo imagenet64``) on 2 CPU cores in well under 30 minutes: each image is
        box-downsampled to 16x16 at load time (768 sub-pixels, so the whole image is in context:
        L = 769 inputs), 256 latents, width 128, 2 latent layers. Its validation bits/dim is
        reported beside two baselines measured in the same run on the same images: the training
        set's sub-pixel histogram (unigram) and "the same channel of the previous pixel" (bigram).
        A demo-corpus, scaled-down row: never comparable with 3.40.
smoke   8x8 images, a tiny model, a few steps: for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from repro.config import ACCELERATOR_DEFAULTS, CorpusData, Experiment, ModelConfig, OptimConfig, TrainConfig
from repro.data import imagenet64
from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.eval.baselines import previous_pixel_bits_per_dim, unigram_bits_per_dim
from repro.sample import writers
from repro.sample.sampler import periodic_constraint
from repro.section import SMOKE_OPTIM, SMOKE_TRAIN, CorpusSection, Metric, PaperNumber, Prompts, SamplingSpec

NAME = "imagenet64"


@dataclass(frozen=True)
class ImageNetData(CorpusData, section=NAME):
    """ImageNet 64x64 data: which prepared corpus, and how stored 64x64 images become tokens."""

    resolution: int = 64  # box-downsample the stored 64x64 images to r x r at load time (r divides 64)
    ordering: Literal["pixel_raster", "r->g->b"] = "pixel_raster"  # official default: R,G,B interleaved

    def validate(self) -> None:
        super().validate()
        imagenet64.resolution_of(self)  # ConfigError unless r divides 64
        imagenet64.ordering_of(self)


def _model(resolution: int, **kw) -> ModelConfig:
    """Learned (x, y, channel) tables from the data, as ``imagenet_w_positions``."""
    base = dict(
        vocab_size=256 + NUM_RESERVED,
        position_encoding="learned",
        positions_from_data=True,
        position_table_sizes=imagenet64.position_table_sizes(resolution),
    )
    return ModelConfig(**{**base, **kw})


PRESETS: dict[str, Experiment] = {
    "paper": Experiment(
        section=NAME,
        preset="paper",
        scale="paper",
        model=_model(
            64,
            max_context=12416,
            num_latents=1024,
            d_model=1024,
            num_layers=60,
            cross_heads=16,
            self_heads=16,
            dropout=0.1,
            **ACCELERATOR_DEFAULTS,
        ),  # fmt: skip
        data=ImageNetData(corpus="main", resolution=64),
        optim=OptimConfig(lr=3e-4, warmup_steps=10_000, schedule="constant"),
        train=TrainConfig(steps=750_000, batch_size=2048, log_every=100, eval_every=10_000, checkpoint_every=5000),
        description="official imagenet_w_positions (770.1M parameters); accelerator pod, real ImageNet 64x64",
    ),
    "cpu": Experiment(
        section=NAME,
        preset="cpu",
        scale="cpu",
        model=_model(
            16, max_context=769, num_latents=256, d_model=128, num_layers=2, cross_heads=4, self_heads=4, dropout=0.0
        ),  # fmt: skip
        data=ImageNetData(corpus="auto", resolution=16),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, schedule="cosine", decay_steps=2000),
        train=TrainConfig(steps=2000, batch_size=16, log_every=20, eval_every=500, checkpoint_every=500),
        description="demo photos at 16x16 on 2 CPU cores (~20 min); beside unigram / previous-pixel baselines",
    ),
    "smoke": Experiment(
        section=NAME,
        preset="smoke",
        scale="smoke",
        model=_model(
            8, max_context=193, num_latents=32, d_model=32, num_layers=1, cross_heads=2, self_heads=2, dropout=0.0
        ),  # fmt: skip
        data=ImageNetData(corpus="auto", resolution=8, eval_examples=4),
        optim=SMOKE_OPTIM,
        train=SMOKE_TRAIN,
        description="tiny, for tests (8x8 demo images)",
    ),
}
DEFAULT_PRESET = "cpu"


class ImageNetSection(CorpusSection):
    name = NAME
    title = "ImageNet 64x64 (paper §5.2)"
    data_config = ImageNetData
    headline = Metric("bits_per_dim", "bits/dim", "bits/dim", ".4f")
    raw_format = imagenet64.FORMAT
    dataset_name = "ImageNet 64x64 (van den Oord et al. 2016)"
    demo_name = "demo: scikit-image photos as 64x64 images (not ImageNet)"
    prepare_preset = "paper"
    paper_numbers = (
        PaperNumber("Table 3", "Perceiver AR", "bits_per_dim", "bits/dim", "validation", 3.40, "[P-quote]",
                    preset="paper", note="after 750k steps, 770M parameters; protocol blocked:512"),
        PaperNumber("Table 3", "Sparse Transformer", "bits_per_dim", "bits/dim", "validation", 3.44, "[S-paper]"),
        PaperNumber("Table 3", "Routing Transformer", "bits_per_dim", "bits/dim", "validation", 3.43, "[S-paper]"),
        PaperNumber("Table 3", "Combiner", "bits_per_dim", "bits/dim", "validation", 3.42, "[S-paper]"),
        PaperNumber("Table 3", "Gated PixelCNN", "bits_per_dim", "bits/dim", "validation", 3.57, "[S-paper]"),
        PaperNumber("Table 3", "PixelRNN", "bits_per_dim", "bits/dim", "validation", 3.63, "[S-paper]"),
    )  # fmt: skip

    def is_paper_source(self, source_dir: Path) -> bool:
        return imagenet64.FORMAT.variant(Path(source_dir)) != imagenet64.VARIANT_NPZ

    def dataset_label(self, source_dir: Path) -> str:
        v = imagenet64.FORMAT.variant(Path(source_dir))
        if v == imagenet64.VARIANT_NPZ:
            return "ImageNet 64x64 (Chrabaszcz et al. 2017 npz: a different downsampling from the paper's)"
        return self.dataset_name

    def data_info(self, exp: Experiment, info):
        """A run at a lower resolution says so: its images are not 64x64."""
        r = imagenet64.resolution_of(exp.data)
        return info if r == 64 else dataclasses.replace(info, name=f"{info.name}, downsampled to {r}x{r}")

    def default_protocol(self, exp: Experiment) -> str:
        """The official ``eval_block_size=512`` for the paper model; M / 2 otherwise (the same
        ratio to the number of latents)."""
        return f"blocked:{max(exp.model.num_latents // 2, 1)}"

    def baselines(self, exp: Experiment, source, split: str, num: int | None = None) -> dict:
        """Unigram (training histogram) and previous-pixel (same channel) models, in bits/dim on
        the same evaluation images, computed from the same prepared corpus."""
        n_train = source.num_documents("train")
        n_eval = source.num_documents(split)
        num = exp.data.eval_examples if num is None else num
        if num:
            n_eval = min(n_eval, num)
        targets = n_eval * (imagenet64.sequence_length(exp.data) - 2)  # sub-pixels (EOS is not scored)

        def contents(s, n):
            return (source.content(s, i) for i in range(n))

        uni = unigram_bits_per_dim(contents("train", n_train), contents(split, n_eval), exp.data)
        prev = previous_pixel_bits_per_dim(contents("train", n_train), contents(split, n_eval), exp.data)
        return {
            "unigram": {
                "value": uni,
                "eval_tokens": targets,
                "description": "sub-pixel value histogram of the training split",
            },
            "previous_pixel": {
                "value": prev,
                "eval_tokens": targets,
                "description": "P(value | same channel of the previous pixel), counted on the training split",
            },
        }

    # ---------------------------------------------------------------- sampling
    def sampling(self, exp: Experiment) -> SamplingSpec:
        """Only the 256 value tokens at each sub-pixel, then only EOS; (x, y, channel) positions
        of every generated token from the data's own position table."""
        n = imagenet64.sequence_length(exp.data) - 2  # sub-pixels
        table = np.zeros((n + 1, exp.model.vocab_size), bool)
        table[:n, NUM_RESERVED : NUM_RESERVED + 256] = True
        table[n, EOS_ID] = True
        pos = imagenet64.FORMAT.positions(n + 2, exp.data)

        def positions_fn(offsets_BxT):
            return pos[np.clip(offsets_BxT, 0, n + 1)]

        return SamplingSpec(defaults={"temperature": 1.0}, positions_fn=positions_fn,
                            allowed=periodic_constraint(table, start=1))  # fmt: skip

    def prompts(self, exp: Experiment, source, num: int, prompt: str | None) -> Prompts:
        """``num`` unconditional samples (SOS only) and ``num`` completions of the top half of the
        first ``num`` evaluation images (the originals kept for the grid)."""
        if prompt is not None:
            raise ValueError("imagenet64 prompts come from the evaluation split (no --prompt)")
        n = imagenet64.sequence_length(exp.data) - 2
        half = n // 2
        docs = source.eval_documents(exp.data.eval_split, num)
        tokens = [np.array([SOS_ID], np.int32)] * num + [d.tokens[: 1 + half] for d in docs]
        expected = [None] * num + [d.tokens for d in docs]
        labels = ["unconditional"] * num + ["completion"] * len(docs)
        return Prompts(tokens, n + 1, expected, labels)

    def write_samples(self, exp: Experiment, prompts: Prompts, generated, outdir: Path, settings: dict) -> dict:
        """``unconditional.png`` (a grid) and ``completions.png`` (original | completion pairs:
        the top half given, the bottom half generated), plus ``samples.json``."""
        from repro.runinfo import write_json_atomic

        images = [imagenet64.tokens_to_image(np.concatenate([p, g]), exp.data)
                  for p, g in zip(prompts.tokens, generated, strict=True)]  # fmt: skip
        unc = [im for im, lab in zip(images, prompts.labels, strict=True) if lab == "unconditional"]
        comp, orig = [], []
        for im, lab, e in zip(images, prompts.labels, prompts.expected, strict=True):
            if lab == "completion":
                comp.append(im)
                orig.append(imagenet64.tokens_to_image(e, exp.data))
        scale = max(1, 128 // imagenet64.resolution_of(exp.data))
        outdir.mkdir(parents=True, exist_ok=True)
        files = {}
        if unc:
            files["unconditional"] = "unconditional.png"
            writers.write_grid(outdir / "unconditional.png", unc, ncols=min(8, len(unc)), scale=scale)
        if comp:
            pairs = [x for o, c in zip(orig, comp, strict=True) for x in (o, c)]
            caps = [t for _ in comp for t in ("original", "completion")]
            files["completions"] = "completions.png"
            writers.write_grid(outdir / "completions.png", pairs, ncols=min(8, len(pairs)), scale=scale, captions=caps)
        summary = {
            "section": NAME,
            "preset": exp.preset,
            "unconditional": len(unc),
            "completions": len(comp),
            "resolution": imagenet64.resolution_of(exp.data),
            "files": files,
            "settings": settings,
        }
        write_json_atomic(outdir / "samples.json", summary)
        return summary


SECTION = ImageNetSection(PRESETS, DEFAULT_PRESET)
