"""Paper Section 5.1: the synthetic mirrored-copy task.

Sequences are ``[SOS] + x + reverse(x) + [EOS]`` over 256 random byte values (vocab 259). The
paper shows Perceiver AR learns to copy perfectly over distances of at least 100k tokens
(``random_mirrored_131072``). We report token accuracy and per-sequence exact match on the
mirrored half (teacher-forced; the mirrored half depends only on the first half, which is
given), plus nats/bits per target token.

Presets
-------
random_mirrored_32      paper  official config verbatim (32 tokens, 16 latents, 1 layer, batch 1024).
                               Runs on a CPU: ``repro run copy --preset random_mirrored_32``.
random_mirrored_131072  paper  official config verbatim (131,072 tokens, 1024 latents, 6 layers,
                               batch 4096, chunked cross-attend with head groups of 4). TPU/GPU pod.
random_mirrored_<n>     custom the 131072 model at intermediate lengths n = 1024 ... 65536 (not runs
                               the paper reports; for scaling studies between the two).
cpu (default)           cpu    length 256, 128 latents, d=128, 2 layers: >= 99.9 % mirrored-half
                               accuracy in a few minutes on 2 CPU cores.
cpu_512, cpu_1024       cpu    longer CPU demos (~10+ minutes; 1024 uses 128 latents, blocked eval).
smoke                   smoke  length 32, tiny; for tests (a few seconds).
"""

from __future__ import annotations

import dataclasses

from repro.config import DataConfig, Experiment, ModelConfig, OptimConfig, PaperRef, TrainConfig
from repro.data.copy_task import VOCAB_SIZE, CopyTask

SECTION = "copy"

PAPER_131072 = PaperRef(
    metric="sequence_accuracy",
    value=None,
    units="fraction",
    source="paper Sec. 5.1.1 [P-quote]: 'perfectly recognize long-context patterns over distances of at "
    "least 100k tokens'; no exact number found (shared/docs/paper.md §1.1)",
    higher_is_better=True,
    note="'perfect' copy is read as 1.0",
)


def _official_model(seq_len: int, **kw) -> ModelConfig:
    """Official defaults (experiment.py get_config) with the copy sweeps' absolute positions."""
    base = dict(
        vocab_size=VOCAB_SIZE,
        max_context=seq_len,
        d_model=1024,
        cross_heads=16,
        self_heads=16,
        dropout=0.1,
        position_encoding="sinusoidal",
        positions_from_data=True,
    )
    base.update(kw)
    return ModelConfig(**base)


def random_mirrored(seq_len: int, scale: str = "custom") -> Experiment:
    """The ``random_mirrored_131072`` hyper-parameters at any sequence length."""
    long = seq_len > 8192
    return Experiment(
        section=SECTION,
        preset=f"random_mirrored_{seq_len}",
        scale=scale,  # type: ignore[arg-type]
        model=_official_model(
            seq_len,
            num_latents=1024,
            num_layers=6,
            attention_impl="chunked" if long else "dense",
            cross_head_group=4,
        ),
        data=DataConfig(name="copy", seq_len=seq_len, minimum_crop_length=seq_len // 2, eval_examples=64),
        optim=OptimConfig(lr=3e-4, warmup_steps=1000, schedule="cosine", decay_steps=1_000_000),
        train=TrainConfig(steps=1_000_000, batch_size=4096, log_every=100, eval_every=5000, checkpoint_every=5000),
        description="official random_mirrored_131072 hyper-parameters"
        + ("" if seq_len == 131072 else f" at length {seq_len} (not a run the paper reports)"),
        paper=(PAPER_131072,) if seq_len == 131072 else (),
    )


PRESETS: dict[str, Experiment] = {
    "random_mirrored_32": Experiment(
        section=SECTION,
        preset="random_mirrored_32",
        scale="paper",
        model=_official_model(32, num_latents=16, num_layers=1),
        data=DataConfig(name="copy", seq_len=32, minimum_crop_length=16, eval_examples=1024),
        optim=OptimConfig(lr=3e-4, warmup_steps=1000, schedule="cosine", decay_steps=1_000_000),
        train=TrainConfig(steps=1_000_000, batch_size=1024, log_every=100, eval_every=1000, checkpoint_every=1000),
        description="official random_mirrored_32 config (the official README's CPU example)",
    ),
    "random_mirrored_131072": random_mirrored(131072, scale="paper"),
    **{f"random_mirrored_{n}": random_mirrored(n) for n in (1024, 4096, 16384, 65536)},
    "cpu": Experiment(
        section=SECTION,
        preset="cpu",
        scale="cpu",
        model=_official_model(256, num_latents=128, d_model=128, num_layers=2, cross_heads=4, self_heads=4),
        data=DataConfig(name="copy", seq_len=256, minimum_crop_length=255, eval_examples=256),
        optim=OptimConfig(lr=1e-3, warmup_steps=100, schedule="constant"),
        train=TrainConfig(steps=1500, batch_size=32, log_every=10, eval_every=50, stop_at_accuracy=0.999),
        description="length 256 on a laptop CPU; stops once mirrored-half accuracy >= 99.9 %",
    ),
    "smoke": Experiment(
        section=SECTION,
        preset="smoke",
        scale="smoke",
        model=_official_model(32, num_latents=16, d_model=32, num_layers=1, cross_heads=2, self_heads=2),
        data=DataConfig(name="copy", seq_len=32, minimum_crop_length=31, eval_examples=32),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, schedule="constant"),
        train=TrainConfig(steps=40, batch_size=16, log_every=5, eval_every=20, checkpoint_every=20),
        description="tiny, for tests",
    ),
}


def _cpu_longer(seq_len: int, num_latents: int, batch: int, steps: int) -> Experiment:
    base = PRESETS["cpu"]
    return dataclasses.replace(
        base,
        preset=f"cpu_{seq_len}",
        model=dataclasses.replace(base.model, max_context=seq_len, num_latents=num_latents),
        # Crops end anywhere in the mirrored half, so every block of M targets gets trained.
        data=dataclasses.replace(base.data, seq_len=seq_len, minimum_crop_length=min(seq_len // 2 + num_latents, seq_len - 1)),
        train=dataclasses.replace(base.train, steps=steps, batch_size=batch),
        description=f"length {seq_len} on a CPU ({num_latents} latents); ~10+ minutes",
    )


PRESETS["cpu_512"] = _cpu_longer(512, 256, 32, 2000)
PRESETS["cpu_1024"] = _cpu_longer(1024, 128, 16, 3000)
DEFAULT_PRESET = "cpu"


def make_dataset(exp: Experiment) -> CopyTask:
    d, m = exp.data, exp.model
    return CopyTask(d.seq_len, m.max_context, m.num_latents, d.minimum_crop_length, d.train_seed, d.eval_seed)


def headline(results: dict) -> tuple[str, float]:
    return "mirrored-half token accuracy", results["metrics"]["scored_token_accuracy"]
