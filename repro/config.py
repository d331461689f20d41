"""Typed, frozen configuration for every run.

An ``Experiment`` is the whole recipe of a run: model, data, optimiser, training loop, mesh.
Presets in ``experiments/<section>.py`` build ``Experiment`` values; the CLI applies
``--set key=value`` overrides through :func:`apply_overrides`, which type-checks every value
against the dataclass field and rejects unknown keys. The resolved config is written to the
run's workdir as ``config.json`` and read back with :func:`experiment_from_dict`.

Each section's data config registers itself when its module is imported (``class
XData(DataConfig, section="x")``); this module never imports the sections (``experiments``
imports it, not the other way round). Whoever reads back configs of the discovered sections
(``repro.app``, ``repro.study``, ``repro.train.loop``, the CLI) imports ``experiments`` first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

PositionEncoding = Literal["rotary", "sinusoidal", "learned", "none"]
AttentionImpl = Literal["dense", "chunked", "fused", "auto"]
Schedule = Literal["constant", "cosine", "rsqrt"]
LossNorm = Literal["sum", "mean"]
ComputeDtype = Literal["float32", "bfloat16", "auto"]
InitPositions = Literal["extend", "nearest", "linear"]
ACCELERATORS = ("gpu", "tpu")
# What paper presets run with: bfloat16 compute and the fused attention kernel on accelerators,
# float32 and the dense / chunked kernels on a CPU (resolved per backend, see resolve_compute_dtype).
ACCELERATOR_DEFAULTS: dict[str, Any] = {"compute_dtype": "auto", "attention_impl": "auto"}
LONG_CONTEXT = 16384  # "auto" attention off a GPU: chunked from this many inputs on, dense below


def backend_kind(backend: str | None = None) -> str:
    """ "gpu", "tpu" or "cpu": ``backend`` (default: JAX's) with CUDA / ROCm names read as "gpu"."""
    if backend is None:
        import jax  # lazy: `repro list` and config parsing stay light

        backend = jax.default_backend()
    return "gpu" if backend in ("gpu", "cuda", "rocm") else backend


def resolve_compute_dtype(value: str, backend: str | None = None) -> str:
    """``auto`` -> bfloat16 on a GPU / TPU, float32 on a CPU; any other value is itself."""
    if value != "auto":
        return value
    return "bfloat16" if backend_kind(backend) in ACCELERATORS else "float32"


def resolve_attention_impl(value: str, max_context: int, backend: str | None = None) -> str:
    """``auto`` -> ``fused`` (``jax.nn.dot_product_attention``: cuDNN flash attention) on a GPU;
    elsewhere ``chunked`` from LONG_CONTEXT inputs on and ``dense`` below (XLA's
    dot_product_attention has no memory-efficient CPU / TPU kernel). Other values are themselves."""
    if value != "auto":
        return value
    if backend_kind(backend) == "gpu":
        return "fused"
    return "chunked" if max_context >= LONG_CONTEXT else "dense"


class ConfigError(ValueError):
    """A config or override that cannot be used; the CLI prints it as one line."""


INT_MAX = 2**31 - 1  # every integer setting must fit int32 (steps, sizes and seeds reach XLA as int32)
INF = float("inf")


def check_ranges(obj: Any, prefix: str, rules: dict[str, tuple[float, float]]) -> None:
    """Validate every field of the dataclass ``obj``: each is of its declared type (a string in
    ``config.json`` where a number belongs is refused), integers fit int32, floats are finite,
    and each number named in ``rules`` lies in its closed range ``(lo, hi)``. Half-open ranges
    are written with a tiny epsilon (``(1e-12, 1)`` for "> 0"); ``None`` values are skipped."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}.{f.name}"
        tp = _field_types(type(obj))[f.name]
        if v is None:
            continue
        base = tp
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            base = next(a for a in typing.get_args(tp) if a is not type(None))
        if base is bool:
            if not isinstance(v, bool):
                raise ConfigError(f"{key} must be true or false, got {v!r}")
            continue
        if base is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{key} must be an integer, got {v!r}")
            if not -INT_MAX <= v <= INT_MAX:
                raise ConfigError(f"{key}={v} is out of range (|value| < 2^31)")
        elif base is float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{key} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise ConfigError(f"{key} must be finite, got {v}")
        elif base is str and not isinstance(v, str):
            raise ConfigError(f"{key} must be a string, got {v!r}")
        elif typing.get_origin(base) is tuple:
            if not isinstance(v, tuple) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise ConfigError(f"{key} must be a list of integers, got {v!r}")
            if f.name in rules and any(not rules[f.name][0] <= x <= rules[f.name][1] for x in v):
                lo, hi = rules[f.name]
                raise ConfigError(f"{key} entries must be in [{lo:g}, {hi:g}], got {v}")
            continue
        elif typing.get_origin(base) is Literal:
            if v not in typing.get_args(base):
                raise ConfigError(f"{key}: '{v}' is not one of {', '.join(map(str, typing.get_args(base)))}")
            continue
        if f.name in rules and isinstance(v, int | float):
            lo, hi = rules[f.name]
            if not lo <= v <= hi:
                what = f">= {lo:g}" if hi in (INF, INT_MAX) else f"in [{lo:g}, {hi:g}]"
                if 0 < lo < 1e-6:
                    what = "> 0" if hi in (INF, INT_MAX) else f"in (0, {hi:g}]"
                raise ConfigError(f"{key} must be {what}, got {v}")


@dataclass(frozen=True)
class ModelConfig:
    """Perceiver AR hyper-parameters (names follow the official code where it has one).

    max_context: N, the number of input positions (official ``max_context_length``).
    num_latents: M, the number of latents = the last M input positions (``z_index_dim``).
    d_model: latent width (``num_z_channels``); d_input: input embedding width
    (``input_embed_dim``, ``None`` = d_model). The cross-attend uses d_input-wide queries/keys
    (official ``cross_attention_shape_for_attn='kv'``) and projects back to d_model.
    """

    vocab_size: int = 259
    max_context: int = 1024
    num_latents: int = 512
    d_model: int = 1024
    d_input: int | None = None
    num_layers: int = 6
    cross_heads: int = 16
    self_heads: int = 16
    cross_widening: int = 4
    self_widening: int = 4
    dropout: float = 0.1  # on attention outputs and MLP outputs (official dropout_prob)
    # Position encodings.
    position_encoding: PositionEncoding = "rotary"
    rotary_fraction: float = 0.5  # fraction of each head's channels that is rotated
    # 0 = the official value: rotary max_context (official max_wavelength = context length),
    # sinusoidal 10,000 (official generate_sinusoidal_features max_scale).
    max_wavelength: float = 0.0
    positions_from_data: bool = False
    # Table size per position dimension when positions come from the data, e.g. (66, 66, 5)
    # for ImageNet's (x, y, channel). () = one dimension of max_context + 1 entries.
    position_table_sizes: tuple[int, ...] = ()
    # Context restriction at train time (off at eval).
    cross_dropout: float = 0.0  # official encoder_dropout_prob: Bernoulli mask on input keys
    train_input_positions: int = 0  # 0 = off; else keep this many random input keys
    # Memory-efficient attention.
    # dense / chunked (repro/model/attention.py), fused (jax.nn.dot_product_attention: cuDNN on a
    # GPU with bfloat16, XLA elsewhere) or auto (resolve_attention_impl: per backend).
    attention_impl: AttentionImpl = "dense"
    query_chunk: int = 1024
    key_chunk: int = 4096
    cross_head_group: int = 0  # heads computed at a time in the cross-attend; 0 = all
    self_head_group: int = 0
    final_init_zeros: bool = True
    # Init stddev of learned position tables: official hk.Embed default, truncated normal, stddev 1.
    learned_position_init: float = 1.0
    # Precision and memory. Parameters are always stored (and updated) in float32; with
    # "bfloat16" the train / eval steps run the model on a bfloat16 copy of them
    # (repro.train.step.cast_for_compute), except the final logits layer: logits, softmax and
    # the loss stay float32. remat: recompute each cross / self-attend block in the backward
    # pass instead of keeping its activations (per-layer rematerialisation). "auto": bfloat16 on
    # accelerators, float32 on a CPU (resolve_compute_dtype; the paper presets' default).
    compute_dtype: ComputeDtype = "float32"
    remat: bool = False
    # Cross-attend keys / values per vocabulary entry ("auto"): with rotary or no position
    # encoding an input's embedding depends on its token alone, so LN + the k / v projections are
    # computed once per vocabulary entry and gathered by token, instead of once per input
    # position. The same function (tested); cheaper when vocab_size < B x L, e.g. 259 rows
    # instead of 65,536 at B=8, N=8192. "auto" uses it when eligible and cheaper; "off" never.
    cross_kv_per_vocab: Literal["auto", "off"] = "auto"

    @property
    def input_width(self) -> int:
        return self.d_input or self.d_model

    def resolved_dtype(self, backend: str | None = None) -> str:
        return resolve_compute_dtype(self.compute_dtype, backend)

    def resolved_attention(self, backend: str | None = None) -> str:
        return resolve_attention_impl(self.attention_impl, self.max_context, backend)

    @property
    def num_position_dims(self) -> int:
        return len(self.position_table_sizes) if self.position_table_sizes else 1

    def kv_per_vocab(self, num_key_rows: int) -> bool:
        """Compute the cross-attend keys / values per vocabulary entry for this many key rows
        (B x keys)? Eligible when an input's features are its token embedding alone (rotary or
        no position encoding: nothing position-dependent is added before the cross-attend's
        LayerNorm and projections); worth it when the table has at most half as many rows."""
        eligible = self.cross_kv_per_vocab == "auto" and self.position_encoding in ("rotary", "none")
        return eligible and 2 * self.vocab_size <= num_key_rows

    def validate(self) -> None:
        check_ranges(self, "model", {
            "vocab_size": (4, INT_MAX), "max_context": (1, INT_MAX), "d_model": (1, 1 << 20),
            "d_input": (1, 1 << 20), "num_layers": (0, 10_000), "cross_heads": (1, 1 << 16),
            "self_heads": (1, 1 << 16), "cross_widening": (1, 1024), "self_widening": (1, 1024),
            "max_wavelength": (0, INF), "position_table_sizes": (1, INT_MAX), "query_chunk": (1, INT_MAX),
            "key_chunk": (1, INT_MAX), "learned_position_init": (1e-12, INF),
        })  # fmt: skip
        if self.num_latents < 1 or self.num_latents > self.max_context:
            raise ConfigError(
                f"model.num_latents must be in [1, max_context={self.max_context}], got {self.num_latents}"
            )
        if self.d_model % self.self_heads:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by self_heads={self.self_heads}")
        if self.input_width % self.cross_heads:
            raise ConfigError(
                f"cross-attend width {self.input_width} is not divisible by cross_heads={self.cross_heads}"
            )
        for name in ("dropout", "cross_dropout"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {v}")
        if not 0.0 <= self.rotary_fraction <= 1.0:
            raise ConfigError(f"model.rotary_fraction must be in [0, 1], got {self.rotary_fraction}")
        if self.position_encoding == "rotary" and self.num_position_dims > 1:
            raise ConfigError("rotary encoding supports 1-D positions only (as the official code)")
        if not 0 <= self.train_input_positions <= self.max_context:
            raise ConfigError(f"model.train_input_positions must be in [0, max_context={self.max_context}]")
        if self.train_input_positions and self.train_input_positions < self.num_latents:
            raise ConfigError("model.train_input_positions must be 0 (off) or >= num_latents (latents are kept)")
        for name in ("cross_head_group", "self_head_group"):
            g, h = getattr(self, name), self.cross_heads if name.startswith("cross") else self.self_heads
            if g < 0 or (g and h % g):
                raise ConfigError(f"model.{name}={g} must divide the number of heads ({h})")


_DATA_CONFIGS: dict[str, type] = {}  # section name -> its data config class, filled as sections are imported


@dataclass(frozen=True)
class DataConfig:
    """Data settings every section has; each section subclasses it with its own typed fields:

        @dataclass(frozen=True)
        class CopyData(DataConfig, section="copy"):
            seq_len: int = 256

    The ``section=`` keyword registers the class, so a run's ``config.json`` loads back into it
    (:func:`experiment_from_dict`) and ``--set data.<field>=...`` is checked against its fields.
    """

    minimum_crop_length: int = 0  # official minimum_crop_length; 0 = num_latents
    train_seed: int = 0  # training batches are a pure function of (train_seed, step)
    eval_split: str = "validation"  # the split `repro run` evaluates (and `repro eval` by default)
    eval_examples: int = 0  # documents evaluated during training; 0 = the whole split

    def __init_subclass__(cls, section: str | None = None, **kw):
        super().__init_subclass__(**kw)
        if section is not None:
            _DATA_CONFIGS[section] = cls

    def validate(self) -> None:
        check_ranges(self, "data", {"minimum_crop_length": (0, INT_MAX), "train_seed": (0, INT_MAX)})
        if self.minimum_crop_length < 0:
            raise ConfigError(f"data.minimum_crop_length must be >= 0, got {self.minimum_crop_length}")
        if self.eval_examples < 0:
            raise ConfigError(f"data.eval_examples must be >= 0 (0 = the whole split), got {self.eval_examples}")
        if self.eval_split not in ("train", "validation", "test"):
            raise ConfigError(f"data.eval_split must be train, validation or test, got '{self.eval_split}'")
        if not 0 <= self.train_seed < 2**32:
            raise ConfigError(f"data.train_seed must be in [0, 2^32), got {self.train_seed}")


@dataclass(frozen=True)
class CorpusData(DataConfig):
    """Data settings of a section that trains on a prepared corpus (``repro data prepare``).

    corpus: which prepared corpus under ``<data dir>/<section>/``: "main" (prepared from the
    user's copy of the real dataset), "demo" (built from data an installed package ships) or
    "auto" (the cpu / smoke presets: "main" when it is prepared with the preset's options, else
    "demo"; ``repro.section.CorpusSection.resolve``)."""

    corpus: str = "main"

    def validate(self) -> None:
        super().validate()
        if not self.corpus or any(c in self.corpus for c in "/\\\0") or self.corpus.startswith("."):
            raise ConfigError(f"data.corpus must be a plain name (e.g. main, demo), got '{self.corpus}'")


def data_config_class(section: str) -> type:
    """The registered data config of ``section`` (``DataConfig`` when none is): registered when the
    section's module is imported (``import experiments`` registers every discovered section's)."""
    return _DATA_CONFIGS.get(section, DataConfig)


@dataclass(frozen=True)
class OptimConfig:
    """Adam as the official code: optax.scale_by_adam(b1 0.9, b2 0.999, eps 1e-8), clip 1.0."""

    lr: float = 3e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 10_000
    schedule: Schedule = "constant"
    decay_steps: int = 1_000_000  # cosine horizon (official training_steps)
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    loss_normalization: LossNorm = "sum"  # official: summed over target tokens

    def validate(self) -> None:
        check_ranges(self, "optim", {
            "lr": (1e-12, INF), "b1": (0, 1 - 1e-12), "b2": (0, 1 - 1e-12), "eps": (1e-30, 1),
            "warmup_steps": (0, INT_MAX), "decay_steps": (1, INT_MAX), "clip_norm": (0, INF),
            "weight_decay": (0, INF), "z_loss": (0, INF), "label_smoothing": (0, 1 - 1e-12),
        })  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # global batch
    grad_accum: int = 1  # micro-batches per step (batch_size must be divisible)
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 500
    keep_checkpoints: int = 2  # the latest N checkpoints are kept ...
    keep_best_checkpoints: int = 1  # ... and the best N by the section's headline (0 = off; repro/checkpoint.py)
    # A run directory whose newest checkpoint's *parameters* start this run (fresh optimiser, step
    # 0): a curriculum stage, e.g. the copy task at a longer length. Same parameter shapes, except
    # that learned position tables may grow (rows past the source's keep this run's fresh init).
    # "preset:NAME": the section's preset NAME is trained first (itself, and whatever its own
    # init_from names), each in <workdir>/stages/NAME, by `repro run` (repro/app.py). Used only
    # when this run's own workdir has no checkpoint yet (a resume continues from its own). "" = off.
    init_from: str = ""
    # How a position table grows past the source's rows: "extend" keeps this run's fresh rows
    # for the new positions; "nearest" / "linear" stretch the source's table over the new length
    # (position interpolation, Chen et al. 2023, arXiv:2306.15595): row i is the source's table at
    # s = i * (n_src - 1) / (n - 1), its nearest row or the linear mix of the two around s, so a
    # length curriculum's "attend to the mirror position" map carries over (up to +-1 position).
    init_positions: InitPositions = "extend"
    # TensorBoard event files in <workdir>/tb/ (repro/train/tboard.py) when tensorboardX is
    # installed. Not part of the run's identity: a run may resume with it changed, and a
    # config.json written before it existed (no key) loads with the default.
    tensorboard: bool = True

    @property
    def init_preset(self) -> str | None:
        """The preset named by ``init_from="preset:NAME"`` (a curriculum stage), else None."""
        return self.init_from[len(INIT_FROM_PRESET) :] if self.init_from.startswith(INIT_FROM_PRESET) else None


INIT_FROM_PRESET = "preset:"


@dataclass(frozen=True)
class MeshConfig:
    """Named device axes (``repro/parallel.py``); -1 = all remaining devices (at most one axis).

    data: batch split, parameters replicated. fsdp: batch split and parameters / optimiser
    state split along their width (ZeRO-3). tensor: heads / MLP hidden / vocabulary split.
    The global batch (per micro-batch) must be divisible by data x fsdp.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def validate(self) -> None:
        check_ranges(self, "mesh", {})
        sizes = (self.data, self.fsdp, self.tensor)
        if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
            raise ConfigError(f"mesh axes must be >= 1 or -1 (the rest, at most one axis), got {sizes}")


@dataclass(frozen=True)
class Experiment:
    section: str
    preset: str
    scale: Literal["paper", "cpu", "smoke", "custom"]
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    description: str = ""

    def validate(self) -> Experiment:
        for name in ("model", "data", "optim", "train", "mesh"):
            if not dataclasses.is_dataclass(getattr(self, name)):
                raise ConfigError(f"config: '{name}' must be an object, got {getattr(self, name)!r}")
        if not isinstance(self.section, str) or not isinstance(self.preset, str):
            raise ConfigError("config: section and preset must be strings")
        if self.scale not in ("paper", "cpu", "smoke", "custom"):
            raise ConfigError(f"config: scale must be paper, cpu, smoke or custom, got {self.scale!r}")
        self.model.validate()
        self.optim.validate()
        self.mesh.validate()
        check_ranges(self.train, "train", {
            "steps": (1, INT_MAX - 1), "batch_size": (1, INT_MAX), "grad_accum": (1, INT_MAX), "seed": (0, INT_MAX),
            "log_every": (1, INT_MAX), "eval_every": (1, INT_MAX), "checkpoint_every": (1, INT_MAX),
            "keep_checkpoints": (1, 1000), "keep_best_checkpoints": (0, 1000),
        })  # fmt: skip
        if self.train.batch_size % self.train.grad_accum:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not divisible by grad_accum={self.train.grad_accum}"
            )
        if self.train.steps < 1:
            raise ConfigError("train.steps must be >= 1")
        if self.train.init_positions not in typing.get_args(InitPositions):
            raise ConfigError(f"train.init_positions must be one of {', '.join(typing.get_args(InitPositions))}, "
                              f"got {self.train.init_positions!r}")  # fmt: skip
        self.data.validate()
        return self


# ------------------------------------------------------------------ overrides / (de)serialisation

_GROUPS = ("model", "data", "optim", "train", "mesh")  # the config groups of an Experiment


def _coerce(raw: str, tp: Any, key: str) -> Any:
    """Parse a command-line string into the field's declared type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise ConfigError(f"{key}: '{raw}' is not one of {', '.join(map(str, choices))}")
        return raw
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null"):
            return None
        return _coerce(raw, args[0], key)
    if origin is tuple:
        (elem, *_) = typing.get_args(tp)
        parts = [p for p in raw.strip("()[] ").split(",") if p.strip()]
        return tuple(_coerce(p.strip(), elem, key) for p in parts)
    try:
        if tp is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            f = float(raw)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if tp is float:
            return float(raw)
        if tp is str:
            return raw
    except ValueError:
        raise ConfigError(f"{key}: '{raw}' is not a valid {tp.__name__}") from None
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(exp: Experiment, overrides: list[str]) -> Experiment:
    """Apply ``group.field=value`` strings, e.g. ``model.num_latents=64``; validates the result."""
    changed = False
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form group.field=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if "." not in key:
            raise ConfigError(f"override key '{key}' must be group.field, groups: {', '.join(_GROUPS)}")
        group, name = key.split(".", 1)
        if group not in _GROUPS:
            raise ConfigError(f"unknown config group '{group}' in '{key}' (groups: {', '.join(_GROUPS)})")
        sub = getattr(exp, group)
        types_ = _field_types(type(sub))
        if name not in types_:
            raise ConfigError(f"unknown config key '{key}' (valid: {', '.join(sorted(types_))})")
        value = _coerce(raw.strip(), types_[name], key)
        exp = dataclasses.replace(exp, **{group: dataclasses.replace(sub, **{name: value})})
        changed = True
    if changed and exp.scale == "paper":
        # An overridden preset is no longer the preset: never report it as one.
        exp = dataclasses.replace(exp, scale="custom")
    return exp.validate()


def experiment_to_dict(exp: Experiment) -> dict[str, Any]:
    return dataclasses.asdict(exp)


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"config.json: {cls.__name__} must be a JSON object, got {type(d).__name__}")
    types_ = _field_types(cls)
    kwargs = {}
    for k, v in d.items():
        if k not in types_:
            raise ConfigError(f"config.json: unknown key '{k}' for {cls.__name__}")
        tp = types_[k]
        if cls is Experiment and k == "data":
            section = str(d.get("section", ""))
            tp = data_config_class(section)
            unknown = sorted(set(v) - set(_field_types(DataConfig))) if isinstance(v, dict) else []
            if tp is DataConfig and unknown:
                raise ConfigError(
                    f"config.json: unknown key '{unknown[0]}' for DataConfig: no data config is registered for "
                    f"section '{section}' (import its module first, e.g. experiments)"
                )
        if dataclasses.is_dataclass(tp):
            v = _from_dict(tp, v)
        elif typing.get_origin(tp) is tuple:
            (elem, *_) = typing.get_args(tp)
            v = tuple(_from_dict(elem, x) if dataclasses.is_dataclass(elem) else x for x in v)
        kwargs[k] = v
    return cls(**kwargs)


def experiment_from_dict(d: dict[str, Any]) -> Experiment:
    return _from_dict(Experiment, d).validate()


def dumps(exp: Experiment) -> str:
    return json.dumps(experiment_to_dict(exp), indent=2, sort_keys=True)
