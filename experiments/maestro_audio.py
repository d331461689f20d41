"""Paper Section 5.6, audio: MAESTRO v3 as SoundStream residual-VQ tokens.

The paper trains on SoundStream codes at 12 / 18 / 22 kbps (24 / 36 / 44 codebook levels x 1024
codes, interleaved per frame, each level in its own 1024-id range: vocabulary 3 + levels x 1024;
official ``sample_utils.process_logits``) at contexts 32,768 and 65,536 (docs/paper_numbers.md
§1.6). **SoundStream itself is not available** (no public weights): this section supports the
data path downstream of the codec. Bring pre-computed codes, one ``.npy`` array [frames, levels]
per recording (``repro/data/maestro_audio.py``: ``AudioCodesFormat``), prepared with ``repro data prepare
maestro_audio --source DIR``. No audio NLL of the paper is reproduced here.

Presets: ``paper_12kbps_32k``, ``paper_22kbps_32k``, ``paper_12kbps_65k``, ``paper_22kbps_65k``
(architecture leads as the symbolic models [S-AI]; chunked attention), and ``smoke``: synthetic
codes (4 levels) through the same loader, sampled with the per-level constraint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repro.config import (
    ACCELERATOR_DEFAULTS,
    ConfigError,
    CorpusData,
    Experiment,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from repro.data import maestro_audio
from repro.data.tokens import NUM_RESERVED, SOS_ID
from repro.sample.sampler import codebook_constraint
from repro.section import SMOKE_OPTIM, SMOKE_TRAIN, CorpusSection, Metric, Prompts, SamplingSpec

NAME = "maestro_audio"
CODES = 1024


@dataclass(frozen=True)
class AudioData(CorpusData, section=NAME):
    levels: int = 24  # residual-VQ levels: 24 = 12 kbps, 36 = 18 kbps, 44 = 22 kbps

    def validate(self) -> None:
        super().validate()
        if self.levels < 1:
            raise ConfigError(f"data.levels must be >= 1, got {self.levels}")


def _paper(kbps: int, context: int) -> Experiment:
    levels = {12: 24, 18: 36, 22: 44}[kbps]
    return Experiment(
        section=NAME,
        preset=f"paper_{kbps}kbps_{context // 1024}k",
        scale="paper",
        model=ModelConfig(
            vocab_size=NUM_RESERVED + levels * CODES,
            max_context=context,
            num_latents=2048,
            d_model=1024,
            num_layers=12,
            cross_heads=1,
            self_heads=4,
            dropout=0.1,
            cross_dropout=0.7,
            position_encoding="rotary",
            rotary_fraction=0.25,
            **ACCELERATOR_DEFAULTS,  # chunked attention off a GPU (contexts >= 16384)
        ),  # fmt: skip
        data=AudioData(corpus=f"main-{levels}", levels=levels),
        optim=OptimConfig(lr=1e-4, warmup_steps=10_000, schedule="constant"),
        train=TrainConfig(steps=1_000_000, batch_size=256, log_every=100, eval_every=10_000, checkpoint_every=5000),
        description=f"SoundStream {kbps} kbps ({levels} levels) at context {context:,}: bring your own codes",
    )


PRESETS: dict[str, Experiment] = {
    p.preset: p for p in (_paper(12, 32768), _paper(22, 32768), _paper(12, 65536), _paper(22, 65536))
}
PRESETS["smoke"] = Experiment(
    section=NAME,
    preset="smoke",
    scale="smoke",
    model=ModelConfig(
        vocab_size=NUM_RESERVED + 4 * CODES,
        max_context=64,
        num_latents=16,
        d_model=32,
        num_layers=1,
        cross_heads=2,
        self_heads=2,
        dropout=0.0,
        position_encoding="rotary",
    ),  # fmt: skip
    data=AudioData(corpus="auto", levels=4, eval_examples=2),
    optim=SMOKE_OPTIM,
    train=SMOKE_TRAIN,
    description="synthetic 4-level codes through the real loader, for tests",
)


class AudioSection(CorpusSection):
    name = NAME
    title = "MAESTRO audio as SoundStream tokens (paper §5.6)"
    data_config = AudioData
    headline = Metric("nats_per_token", "NLL", "nats/token", ".4f")
    raw_format = maestro_audio.FORMAT
    dataset_name = "MAESTRO v3 SoundStream codes (user-computed)"
    demo_name = "demo: synthetic residual-VQ codes (not audio)"
    prepare_preset = "paper_12kbps_32k"

    def prepare_options(self, data_cfg: AudioData) -> dict[str, Any]:
        return {"levels": data_cfg.levels, "codes_per_level": CODES}

    def sampling(self, exp: Experiment) -> SamplingSpec:
        """Level l's ids only at the token of level l (offset - 1 mod levels), as the official sampler."""
        return SamplingSpec(defaults={"temperature": 1.0}, allowed=codebook_constraint(exp.data.levels, CODES))

    def prompts(self, exp: Experiment, source, num: int, prompt: str | None) -> Prompts:
        """Unconditional samples (prompts must start at SOS for the level constraint)."""
        if prompt is not None:
            raise ValueError("maestro_audio samples unconditionally (no --prompt)")
        n = exp.data.levels * 16  # 16 frames
        labels = [f"unconditional {i}" for i in range(num)]
        return Prompts([np.array([SOS_ID], np.int32)] * num, n, [None] * num, labels, source)

    def write_samples(self, exp: Experiment, prompts: Prompts, generated, outdir: Path, settings: dict) -> dict:
        """``codes_<i>.npy`` [frames, levels] per sample (for the user's codec to decode)."""
        tok = prompts.source.tokenizer
        outdir.mkdir(parents=True, exist_ok=True)
        files = []
        for i, g in enumerate(generated):
            ids = g[g >= NUM_RESERVED] - NUM_RESERVED
            ids = ids[: len(ids) // tok.levels * tok.levels]
            np.save(outdir / f"codes_{i:02d}.npy", tok.decode(ids))
            files.append(f"codes_{i:02d}.npy")
        from repro.runinfo import write_json_atomic

        summary = {"section": NAME, "preset": exp.preset, "samples": len(files), "files": files, "settings": settings}
        write_json_atomic(outdir / "samples.json", summary)
        return summary


SECTION = AudioSection(PRESETS, "smoke")
