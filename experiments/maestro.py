"""Paper Section 5.6: symbolic music, MAESTRO, NLL per event (nats).

Music Transformer performance events (``repro/data/midi_events.py``: sustain applied, 10 ms steps,
time shifts up to 1 s, 32 velocity bins, NOTE_ON / NOTE_OFF). The paper's numbers (shared/docs/
paper.md §1.6): MAESTRO v1 **test 1.82 / validation 1.82** [S-agg] (Music Transformer 1.84
[S-AI]); MAESTRO v3 test 1.91 / validation 1.90 [S-AI]. The music configs were never released:
context 4096, 2048 latents, 12 layers, 1 cross-attend and 4 self-attention heads, cross-attend
dropout 0.7, rotary on 25 % of the channels, lr 1e-4, 1M steps, no augmentation are leads [S-AI];
width, batch and warm-up are our choices [I] (docs/deviations.md).

Presets
-------
paper_v3  the leads above on MAESTRO v3 with the Music Transformer paper's 388 events (pitches
          0-127); prepare with ``repro data prepare maestro --source maestro-v3.0.0``.
paper_v1  the same on MAESTRO v1 (prepare with ``--preset paper_v1``: its own corpus).
cpu       Bach chorales from the music21 corpus in the MAESTRO v3 layout (``repro data demo
          maestro``; 327 / 42 / 41 pieces), Magenta's 21-108 pitch range (308 events), context
          1024, 256 latents, width 128, 3 layers: 2 CPU cores, well under 30 minutes, beside the
          unigram baseline of the training split. Not MAESTRO: not comparable with 1.82.
smoke     tiny, for tests.

Audio (SoundStream residual-VQ tokens) is its own section, ``experiments/maestro_audio.py``.
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
from repro.data import maestro, midi_events
from repro.data.source import DataError
from repro.data.tokens import NUM_RESERVED, SOS_ID
from repro.eval.baselines import unigram
from repro.sample import writers
from repro.section import SMOKE_OPTIM, SMOKE_TRAIN, CorpusSection, Metric, PaperNumber, Prompts, SamplingSpec

NAME = "maestro"


@dataclass(frozen=True)
class MaestroData(CorpusData, section=NAME):
    """The event vocabulary's pitch range and the Music Transformer augmentation (off by default)."""

    version: str = ""  # the MAESTRO version this preset is for ("v1", "v3"; "" = any), from the metadata table
    min_pitch: int = 21
    max_pitch: int = 108
    augment: bool = False  # transpose +-transpose_range semitones and time-stretch, per training crop
    transpose_range: int = 3
    stretch_min: float = 0.95
    stretch_max: float = 1.05
    prompt_events: int = 256  # `repro sample`: events of a validation piece given as the prompt ...
    sample_events: int = 512  # ... and events generated after it

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.min_pitch <= self.max_pitch <= 127:
            raise ConfigError(f"data.min_pitch / max_pitch must satisfy 0 <= min <= max <= 127, got "
                              f"{self.min_pitch} / {self.max_pitch}")  # fmt: skip
        if self.transpose_range < 0 or not 0 < self.stretch_min <= self.stretch_max:
            raise ConfigError("data.transpose_range must be >= 0 and 0 < stretch_min <= stretch_max")
        if self.prompt_events < 1 or self.sample_events < 1:
            raise ConfigError("data.prompt_events and data.sample_events must be >= 1")
        if self.version not in ("", "v1", "v2", "v3"):
            raise ConfigError(f"data.version must be v1, v2, v3 or empty (any), got '{self.version}'")


class _MaestroFormat(maestro.MaestroFormat):
    """The MAESTRO reader with the section's training-time augmentation."""

    def augments(self, data_cfg) -> bool:
        return bool(getattr(data_cfg, "augment", False))

    def augment(self, content, rng, data_cfg, tokenizer):
        return midi_events.augment_events(content, tokenizer, rng, transpose_range=data_cfg.transpose_range,
                                          stretch_range=(data_cfg.stretch_min, data_cfg.stretch_max))  # fmt: skip


def _events(min_pitch: int, max_pitch: int) -> int:
    return midi_events.PerformanceEncoding(min_pitch, max_pitch).vocab_size


def _paper(version: str) -> Experiment:
    return Experiment(
        section=NAME,
        preset=f"paper_{version}",
        scale="paper",
        model=ModelConfig(
            vocab_size=_events(0, 127) + NUM_RESERVED,
            max_context=4096,
            num_latents=2048,
            d_model=1024,
            num_layers=12,
            cross_heads=1,
            self_heads=4,
            dropout=0.1,
            cross_dropout=0.7,
            position_encoding="rotary",
            rotary_fraction=0.25,
            **ACCELERATOR_DEFAULTS,
        ),  # fmt: skip
        data=MaestroData(corpus="main" if version == "v3" else "main-v1", version=version, min_pitch=0, max_pitch=127),
        optim=OptimConfig(lr=1e-4, warmup_steps=10_000, schedule="constant"),
        train=TrainConfig(steps=1_000_000, batch_size=256, log_every=100, eval_every=10_000, checkpoint_every=5000),
        description=f"MAESTRO {version} symbolic, the paper's leads (configs never released; several values ours)",
    )


PRESETS: dict[str, Experiment] = {
    "paper_v3": _paper("v3"),
    "paper_v1": _paper("v1"),
    "cpu": Experiment(
        section=NAME,
        preset="cpu",
        scale="cpu",
        model=ModelConfig(
            vocab_size=_events(21, 108) + NUM_RESERVED,
            max_context=1024,
            num_latents=256,
            d_model=128,
            num_layers=3,
            cross_heads=4,
            self_heads=4,
            dropout=0.0,
            position_encoding="rotary",
            rotary_fraction=0.25,
        ),  # fmt: skip
        data=MaestroData(corpus="auto"),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, schedule="cosine", decay_steps=1500),
        train=TrainConfig(steps=1500, batch_size=16, log_every=20, eval_every=500, checkpoint_every=500),
        description="Bach chorales (demo corpus, not MAESTRO) on 2 CPU cores; beside the unigram baseline",
    ),
    "smoke": Experiment(
        section=NAME,
        preset="smoke",
        scale="smoke",
        model=ModelConfig(
            vocab_size=_events(21, 108) + NUM_RESERVED,
            max_context=64,
            num_latents=16,
            d_model=32,
            num_layers=1,
            cross_heads=2,
            self_heads=2,
            dropout=0.0,
            position_encoding="rotary",
        ),  # fmt: skip
        data=MaestroData(corpus="auto", eval_examples=2, augment=True, prompt_events=16, sample_events=16),
        optim=SMOKE_OPTIM,
        train=SMOKE_TRAIN,
        description="tiny, for tests (augmentation on, to exercise it)",
    ),
}


class MaestroSection(CorpusSection):
    name = NAME
    title = "MAESTRO symbolic piano (paper §5.6)"
    data_config = MaestroData
    headline = Metric("nats_per_token", "NLL", "nats/event", ".4f")
    raw_format = _MaestroFormat()
    dataset_name = "MAESTRO"
    demo_name = "demo: Bach chorales from the music21 corpus, not MAESTRO"
    prepare_preset = "paper_v3"
    paper_numbers = (
        PaperNumber("§5.6", "Perceiver AR", "nats_per_token", "nats/event", "test", 1.82, "[S-agg] wizwand",
                    preset="paper_v1", note="MAESTRO v1"),
        PaperNumber("§5.6", "Perceiver AR", "nats_per_token", "nats/event", "validation", 1.82, "[S-agg] wizwand",
                    preset="paper_v1", note="MAESTRO v1"),
        PaperNumber("§5.6", "Music Transformer", "nats_per_token", "nats/event", "test", 1.84, "[S-AI]",
                    note="MAESTRO v1, with augmentation"),
        PaperNumber("§5.6", "Perceiver AR", "nats_per_token", "nats/event", "test", 1.91, "[S-AI]",
                    preset="paper_v3", note="MAESTRO v3"),
        PaperNumber("§5.6", "Perceiver AR", "nats_per_token", "nats/event", "validation", 1.90, "[S-AI]",
                    preset="paper_v3", note="MAESTRO v3"),
    )  # fmt: skip

    def prepare_options(self, data_cfg: MaestroData) -> dict[str, Any]:
        return {"min_pitch": data_cfg.min_pitch, "max_pitch": data_cfg.max_pitch}

    def dataset_label(self, source_dir: Path) -> str:
        return f"MAESTRO {self.raw_format.variant(Path(source_dir))}"

    def _version_error(self, data_cfg: MaestroData, found: str, what: str) -> DataError | None:
        if not data_cfg.version or found == data_cfg.version:
            return None
        fit = [n for n, e in self.presets.items() if getattr(e.data, "version", "") == found]
        hint = f"pass --preset {fit[0]}" if fit else "use a preset for any version (e.g. --preset cpu)"
        return DataError(f"{what} is MAESTRO {found}, but this preset is for MAESTRO {data_cfg.version}: {hint}")

    def check_source(self, data_cfg: MaestroData, source_dir: Path) -> None:
        """Refuse a source of another MAESTRO version than the preset's (from its metadata table)."""
        table = maestro.find_table(Path(source_dir))
        if e := self._version_error(data_cfg, maestro.FORMAT.variant(Path(source_dir)), f"{source_dir} ({table.name})"):
            raise e

    def check_data(self, data_cfg: MaestroData, manifest: dict, where: Path) -> None:
        if e := self._version_error(data_cfg, str(manifest["source"]["variant"]), f"the corpus in {where}"):
            raise e

    def baselines(self, exp: Experiment, source, split: str, num: int | None = None) -> dict:
        u = unigram(source, split, exp.data.eval_examples if num is None else num)
        return {"unigram": {"value": u["nats_per_token"], "eval_tokens": u["eval_tokens"],
                            "description": "event unigram of the training split (add-one), same targets"}}  # fmt: skip

    def sampling(self, exp: Experiment) -> SamplingSpec:
        return SamplingSpec(defaults={"temperature": 1.0})

    def prompts(self, exp: Experiment, source, num: int, prompt: str | None) -> Prompts:
        """``num`` continuations of the opening ``data.prompt_events`` events of the first
        evaluation pieces, then ``num`` unconditional samples (SOS only)."""
        if prompt is not None:
            raise ValueError("maestro prompts come from the evaluation split (no --prompt)")
        P, K = exp.data.prompt_events, exp.data.sample_events
        docs = source.eval_documents(exp.data.eval_split, num)
        toks = [d.tokens[: 1 + P] for d in docs] + [np.array([SOS_ID], np.int32)] * num
        expected = [d.tokens[1 + P : 1 + P + K] for d in docs] + [None] * num
        labels = [f"continuation {i}" for i in range(len(docs))] + [f"unconditional {i}" for i in range(num)]
        return Prompts(toks, K, expected, labels, source)

    def write_samples(self, exp: Experiment, prompts: Prompts, generated, outdir: Path, settings: dict) -> dict:
        """Per sample a ``.mid`` file and a piano-roll PNG (prompt + continuation; for
        continuations also the original), and ``samples.json``."""
        from repro.runinfo import write_json_atomic

        enc = prompts.source.tokenizer
        outdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (p, g, e, lab) in enumerate(zip(prompts.tokens, generated, prompts.expected, prompts.labels,
                                               strict=True)):  # fmt: skip
            ids = np.concatenate([p, g])
            content = ids[ids >= NUM_RESERVED] - NUM_RESERVED
            stem = f"{i:02d}_{lab.split()[0]}"
            writers.write_midi(outdir / f"{stem}.mid", content, enc)
            writers.piano_roll_png(outdir / f"{stem}.png", content, enc, title=f"{exp.preset}: {lab} (model)")
            row = {"label": lab, "midi": f"{stem}.mid", "piano_roll": f"{stem}.png", "events": len(content)}
            if e is not None:
                truth = np.concatenate([p, e])
                tc = truth[truth >= NUM_RESERVED] - NUM_RESERVED
                writers.piano_roll_png(
                    outdir / f"{stem}_original.png", tc, enc, title=f"{exp.preset}: {lab} (original)"
                )
                row["original_piano_roll"] = f"{stem}_original.png"
            rows.append(row)
        summary = {"section": NAME, "preset": exp.preset, "samples": len(rows), "settings": settings}
        write_json_atomic(outdir / "samples.json", {"summary": summary, "samples": rows})
        return summary


SECTION = MaestroSection(PRESETS, "cpu")
