"""Import a checkpoint of the official Perceiver AR code (``google-research/perceiver-ar``).

The official jaxline experiment saves ``<checkpoint_dir>/models/latest/step_<N>_<date>/checkpoint.dill``
(``experiment.py`` ``_save_state_from_in_memory_checkpointer``): a dill pickle of
``{'global_step', 'params', 'state', 'opt_state'}``, where ``params`` is Haiku's two-level mapping
module name -> parameter name -> array. :func:`import_official` turns one into a run directory that
``repro eval`` / ``repro sample`` read directly: ``config.json`` (the preset) and an Orbax
checkpoint ``{"params", "opt_state"}`` at the official global step. The optimiser state is NOT
imported (a fresh one is written, as the checkpoint metadata says): the import is for evaluation
and sampling, not for resuming the official training.

Haiku names (``perceiver_ar_model.py``: modules built in a module's ``__init__`` get ``~/``, those
built in ``__call__`` do not; repeated names get ``_1``, ``_2``, ...), and ours:

    perceiver_ar/~/embed               embeddings  -> embed.embedding          token embedding
    perceiver_ar/~/embed_<k+1>         embeddings  -> pos_tables[k].embedding  learned ('random') table k
                                                     (skipped, checked)       frozen sinusoidal table k
    perceiver_ar/~/linear              w, b        -> z_linear                 query projection
    perceiver_ar/~/cross_attention/layer_norm      -> cross.ln_q               (scale, offset -> scale, bias)
                  .../layer_norm_1                 -> cross.ln_kv
                  .../layer_norm_2                 -> cross.ln_mlp
                  .../attention/linear, _1, _2, _3 -> cross.attn.q, k, v, o    (rotary: q / k columns permuted)
                  .../dense/linear, linear_1       -> cross.mlp.up, down
    perceiver_ar/~/self_attention[_i]/layer_norm   -> layers[i].ln_attn
                  .../layer_norm_1                 -> layers[i].ln_mlp
                  .../attention/linear, _1, _2, _3 -> layers[i].attn.q, k, v, o
                  .../dense/linear, linear_1       -> layers[i].mlp.up, down
    perceiver_ar/layer_norm                        -> ln_final
    perceiver_ar/~/logits              w, b        -> logits

Haiku's ``w`` is [in, out] like ours. Rotary: the official code pairs channels (2j, 2j+1) of each
head's rotated block, ours (j, j + R/2), so the q and k output columns of every head are permuted
(``positions.rotary_permutation``); q.k, hence the function, is unchanged.

Pickles run code when loaded, so the file is read with a restricted unpickler that builds only
numpy arrays, numpy scalars / dtypes and plain containers (Haiku's mappings become dicts, optax
state tuples become plain tuples, jax arrays numpy arrays): anything else is refused, and dill
(not a dependency) is not needed. Every problem is one :class:`OfficialCheckpointError` line.
"""

from __future__ import annotations

import builtins
import collections
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from repro.config import ConfigError, Experiment, ModelConfig, experiment_to_dict
from repro.model import positions

__all__ = ["OfficialCheckpointError", "import_official", "load_official_checkpoint", "official_layout"]

ROOT = "perceiver_ar"  # official PerceiverAR(name='perceiver_ar'), built at the top of hk.transform
IMPORT_RECORD = "official_import.json"
# The frozen sinusoidal table is compared with ours to this (we match the float64 table to ~1e-6).
SINUSOIDAL_ATOL = 1e-4


class OfficialCheckpointError(ConfigError):
    """An official checkpoint that cannot be imported (unreadable, unsafe, or not the preset's
    model): one line naming the file and the first offending parameter / object."""


# ------------------------------------------------------------------------------ restricted unpickling

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class _PlainTuple(tuple):
    """Stand-in for an optax state class (a namedtuple): its fields as a plain tuple."""

    def __new__(cls, *fields):
        return tuple.__new__(cls, fields)


def _as_dict(mapping=(), *args, **kwargs):
    """Stand-in for Haiku's FlatMapping / FlatMap / frozendict: ``FlatMapping(dict)`` -> dict."""
    return dict(mapping, **kwargs)


def _namedtuple_standin(*_args, **_kwargs):
    """Stand-in for ``dill._dill._create_namedtuple`` (how dill pickles a namedtuple class)."""
    return _PlainTuple


def _array_from_reduce(fun, args, state, npdict=None):
    """``jax._src.array._reconstruct_array`` / ``dill._dill._create_array`` without the device
    transfer or ``__dict__`` update: ``fun`` was itself resolved by the restricted unpickler."""
    if fun is not _multiarray._reconstruct:
        raise pickle.UnpicklingError("array reconstruction with a function other than numpy's")
    arr = fun(*args)
    arr.__setstate__(state)
    return arr


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")
_BUILTINS = frozenset("dict list tuple set frozenset int float complex bool str bytes bytearray".split())
_HAIKU_MAPPINGS = ("FlatMapping", "FlatMap", "frozendict")


def _allowed(module: str, name: str) -> Any | None:
    """What a global reference in the pickle may resolve to; None = refused."""
    if module in _NUMPY_MODULES and name in ("_reconstruct", "scalar"):
        return getattr(_multiarray, name)
    if module in _NUMERIC_MODULES and name == "_frombuffer":
        return _numeric._frombuffer
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if (module, name) in (("jax._src.array", "_reconstruct_array"), ("dill._dill", "_create_array")):
        return _array_from_reduce
    if (module, name) == ("dill._dill", "_create_namedtuple"):
        return _namedtuple_standin
    if module.split(".")[0] == "haiku" and name in _HAIKU_MAPPINGS:
        return _as_dict
    if module.split(".")[0] == "optax" and re.fullmatch(r"[A-Za-z_]\w*State", name):
        return _PlainTuple
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
        return getattr(builtins, name)
    if (module, name) == ("_codecs", "encode"):
        return _latin1_bytes
    return None


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.ref = f"{module}.{name}"


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``_allowed``: an untrusted file cannot call anything else."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is None:
            raise _Refused(module, name)
        return obj

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent references are not supported")


def find_checkpoint(path: Path) -> Path:
    """``checkpoint.dill`` itself; a step directory holding one; or a checkpoint directory /
    unzipped release (``.../models/latest/step_<N>_<date>/checkpoint.dill``: the highest step)."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "checkpoint.dill").is_file():
        return path / "checkpoint.dill"
    found = sorted(path.glob("**/models/latest/*/checkpoint.dill")) if path.is_dir() else []

    def step(p: Path) -> int:
        m = re.match(r"step_(\d+)", p.parent.name)
        return int(m.group(1)) if m else -1

    if not found:
        raise OfficialCheckpointError(
            f"{path}: no official checkpoint there (expected checkpoint.dill, or models/latest/step_<N>_<date>/)"
        )
    return max(found, key=lambda p: (step(p), str(p)))


def load_official_checkpoint(path: Path) -> dict[str, Any]:
    """The restricted-unpickled checkpoint: ``{'global_step': int, 'params': {module: {name:
    float32 ndarray}}, ...}``. Raises :class:`OfficialCheckpointError` (one line) for a file that
    is unreadable, references anything but arrays and containers, or has no parameter mapping."""
    path = find_checkpoint(path)
    try:
        with path.open("rb") as f:
            obj = _RestrictedUnpickler(f).load()
    except _Refused as e:
        raise OfficialCheckpointError(
            f"{path}: refusing to load: the pickle references {e.ref}, which is not an array or a plain "
            "container (a pickle can run code; only arrays and containers are accepted)"
        ) from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise OfficialCheckpointError(f"{path}: not a readable official checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("params"), Mapping):
        raise OfficialCheckpointError(f"{path}: not an official checkpoint (no 'params' mapping at the top level)")
    params: dict[str, dict[str, np.ndarray]] = {}
    for module, group in obj["params"].items():
        if not isinstance(group, Mapping):
            raise OfficialCheckpointError(f"{path}: params['{module}'] is not a mapping of parameters")
        params[str(module)] = {}
        for name, value in group.items():
            key = f"{module}/{name}"
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise OfficialCheckpointError(f"{path}: parameter {key} is not a floating-point array ({kind})")
            params[str(module)][str(name)] = value
    out = dict(obj)
    out["params"] = params
    out["global_step"] = _global_step(obj.get("global_step", 0), path)
    out["path"] = path
    return out


def _global_step(raw: Any, path: Path) -> int:
    try:
        flat = np.asarray(raw).reshape(-1)
        step = int(flat[0]) if flat.size else 0
    except (TypeError, ValueError):
        raise OfficialCheckpointError(f"{path}: global_step {raw!r} is not a number") from None
    if step < 0:
        raise OfficialCheckpointError(f"{path}: global_step {step} is negative")
    return step


# ------------------------------------------------------------------------------ the mapping


@dataclass(frozen=True)
class Entry:
    """One official parameter: where it goes in our model (``ours`` None: the frozen sinusoidal
    table, skipped and compared with ours), its expected shape, and the rotary column permutation
    of its output channels (q / k of rotary attention: (heads, head_dim, fraction))."""

    module: str
    name: str
    ours: tuple[str | int, ...] | None
    shape: tuple[int, ...]
    permute: tuple[int, int, float] | None = None

    @property
    def key(self) -> str:
        return f"{self.module}/{self.name}"


def official_layout(cfg: ModelConfig) -> list[Entry]:
    """Every parameter an official checkpoint of this model has, in the module order of the
    official ``PerceiverAR``, with the shape it must have and where it lands in ours."""
    cfg.validate()
    D, Di, V, T = cfg.d_model, cfg.input_width, cfg.vocab_size, f"{ROOT}/~/"
    rotary = cfg.position_encoding == "rotary"
    out: list[Entry] = [Entry(T + "embed", "embeddings", ("embed", "embedding"), (V, Di))]
    sizes = cfg.position_table_sizes or (cfg.max_context + 1,)
    if cfg.position_encoding in ("learned", "sinusoidal"):
        for k, n in enumerate(sizes):
            ours = ("pos_tables", k, "embedding") if cfg.position_encoding == "learned" else None
            out.append(Entry(T + f"embed_{k + 1}", "embeddings", ours, (n, Di)))

    def linear(module: str, ours: tuple, d_in: int, d_out: int, permute=None) -> list[Entry]:
        return [
            Entry(module, "w", (*ours, "kernel"), (d_in, d_out), permute),
            Entry(module, "b", (*ours, "bias"), (d_out,), permute),
        ]

    def layer_norm(module: str, ours: tuple, d: int) -> list[Entry]:
        return [Entry(module, "scale", (*ours, "scale"), (d,)), Entry(module, "offset", (*ours, "bias"), (d,))]

    def attention(module: str, ours: tuple, d_q: int, d_kv: int, width: int, d_out: int, heads: int) -> list[Entry]:
        perm = (heads, width // heads, cfg.rotary_fraction) if rotary else None
        a = module + "/attention/linear"
        return [
            *linear(a, (*ours, "attn", "q"), d_q, width, perm),
            *linear(a + "_1", (*ours, "attn", "k"), d_kv, width, perm),
            *linear(a + "_2", (*ours, "attn", "v"), d_kv, width),
            *linear(a + "_3", (*ours, "attn", "o"), width, d_out),
        ]

    def dense(module: str, ours: tuple, d: int, widening: int) -> list[Entry]:
        return [
            *linear(module + "/dense/linear", (*ours, "mlp", "up"), d, d * widening),
            *linear(module + "/dense/linear_1", (*ours, "mlp", "down"), d * widening, d),
        ]

    c = T + "cross_attention"
    out += [
        *layer_norm(c + "/layer_norm", ("cross", "ln_q"), D),
        *layer_norm(c + "/layer_norm_1", ("cross", "ln_kv"), Di),
        *layer_norm(c + "/layer_norm_2", ("cross", "ln_mlp"), D),
        *attention(c, ("cross",), D, Di, Di, D, cfg.cross_heads),
        *dense(c, ("cross",), D, cfg.cross_widening),
        *linear(T + "linear", ("z_linear",), Di, D),
    ]
    for i in range(cfg.num_layers):
        s, ours = T + ("self_attention" if i == 0 else f"self_attention_{i}"), ("layers", i)
        out += [
            *layer_norm(s + "/layer_norm", (*ours, "ln_attn"), D),
            *layer_norm(s + "/layer_norm_1", (*ours, "ln_mlp"), D),
            *attention(s, ours, D, D, D, D, cfg.self_heads),
            *dense(s, ours, D, cfg.self_widening),
        ]
    out += [*layer_norm(f"{ROOT}/layer_norm", ("ln_final",), D), *linear(T + "logits", ("logits",), D, V)]
    return out


def _permute_columns(x: np.ndarray, heads: int, head_dim: int, fraction: float) -> np.ndarray:
    """Official q / k output columns -> ours (per head, ``positions.rotary_permutation``)."""
    perm = positions.rotary_permutation(head_dim, fraction)
    shaped = x.reshape(*x.shape[:-1], heads, head_dim)
    return np.ascontiguousarray(shaped[..., perm].reshape(x.shape))


def _sinusoidal_difference(table: np.ndarray, cfg: ModelConfig) -> float:
    """max |official frozen table - our sinusoidal features| over all its rows (chunked)."""
    wl = cfg.max_wavelength or positions.SINUSOIDAL_MAX_WAVELENGTH
    features = jax.jit(lambda pos: positions.sinusoidal_features(pos, table.shape[1], wl))
    worst, chunk = 0.0, 8192
    for start in range(0, table.shape[0], chunk):
        rows = table[start : start + chunk]
        ours = np.asarray(features(jnp.arange(start, start + chunk, dtype=jnp.int32)[None]))[0, : len(rows)]
        worst = max(worst, float(np.abs(ours - rows).max()))
    return worst


def convert_params(
    params: Mapping[str, Mapping[str, np.ndarray]], exp: Experiment, source: str = "official checkpoint"
) -> tuple[dict[tuple, np.ndarray], list[dict[str, Any]]]:
    """Official parameters -> {our parameter path: float32 array} and the mapping table (one row
    per official parameter: official name, our path or 'skipped', shape, how it was transformed).

    Refuses (one line) the first parameter that is missing or has the wrong shape, in the official
    module order, then the first official parameter the preset's model has no place for, then a
    frozen sinusoidal table that is not the official formula's."""
    cfg, preset = exp.model, exp.preset
    layout = official_layout(cfg)
    for e in layout:
        got = params.get(e.module, {}).get(e.name)
        if got is None:
            raise OfficialCheckpointError(f"{source}: missing parameter {e.key} (the {preset} model has it)")
        if tuple(got.shape) != e.shape:
            raise OfficialCheckpointError(
                f"{source}: parameter {e.key} has shape {tuple(got.shape)}, the {preset} model expects {e.shape}"
            )
    known = {e.key for e in layout}
    extra = sorted(f"{m}/{n}" for m, group in params.items() for n in group if f"{m}/{n}" not in known)
    if extra:
        raise OfficialCheckpointError(
            f"{source}: parameter {extra[0]} has no place in the {preset} model"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    ours: dict[tuple, np.ndarray] = {}
    table: list[dict[str, Any]] = []
    for e in layout:
        x = np.asarray(params[e.module][e.name], np.float32)
        row: dict[str, Any] = {"official": e.key, "shape": list(e.shape)}
        if e.ours is None:
            diff = _sinusoidal_difference(x, cfg)
            if not diff <= SINUSOIDAL_ATOL:
                raise OfficialCheckpointError(
                    f"{source}: frozen sinusoidal table {e.key} differs from the official formula's by up to "
                    f"{diff:.3g} (> {SINUSOIDAL_ATOL}); not a table this model can reproduce"
                )
            row.update(ours="skipped", note=f"frozen sinusoidal table; computed on the fly, max |diff| {diff:.2g}")
        else:
            if e.permute is not None:
                x = _permute_columns(x, *e.permute)
                row["note"] = "rotary q/k columns permuted per head (2j, 2j+1) -> (j, j+R/2)"
            if e.ours in ours:  # a layout bug, never a user error
                raise AssertionError(f"two official parameters map to {e.ours}")
            ours[e.ours] = x
            row["ours"] = ".".join(map(str, e.ours))
        table.append(row)
    return ours, table


def _state_path(path) -> tuple:
    """A jax key path into an nnx.State -> our parameter path (without the Variable's 'value')."""
    keys = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            keys.append(k.key)
        elif isinstance(k, jax.tree_util.SequenceKey):
            keys.append(k.idx)
        elif isinstance(k, jax.tree_util.GetAttrKey) and k.name != "value":
            keys.append(k.name)
    return tuple(keys)


def import_official(checkpoint: Path, exp: Experiment, workdir: Path) -> dict[str, Any]:
    """Import an official checkpoint as a run of preset ``exp`` in ``workdir``; returns a summary.

    ``checkpoint``: ``checkpoint.dill``, its step directory, or a directory holding
    ``models/latest/step_<N>_<date>/`` (the highest step is taken). Writes ``config.json``,
    ``checkpoints/<global_step>/`` ({"params", "opt_state"}; the optimiser state is fresh, not the
    official one, as the checkpoint metadata records) and ``official_import.json`` (the summary,
    with the mapping table). Refuses a workdir that already holds a run."""
    from repro.checkpoint import Checkpointer
    from repro.runinfo import git_sha, now, write_json_atomic
    from repro.train.state import build

    exp = exp.validate()
    workdir = Path(workdir)
    if (workdir / "config.json").exists() or (workdir / "checkpoints").exists():
        raise OfficialCheckpointError(f"{workdir} already holds a run; import into a fresh --workdir")
    loaded = load_official_checkpoint(checkpoint)
    path: Path = loaded["path"]
    converted, table = convert_params(loaded["params"], exp, source=str(path))
    step = loaded["global_step"]

    run = build(exp, init=False)
    placed: set[tuple] = set()

    def place(key_path, abstract):
        p = _state_path(key_path)
        if p not in converted:
            raise AssertionError(f"our parameter {p} has no official counterpart")  # a layout bug
        placed.add(p)
        return jax.device_put(converted[p].astype(abstract.dtype), abstract.sharding)

    params = jax.tree_util.tree_map_with_path(place, run.abstract["params"])
    if placed != set(converted):
        raise AssertionError(f"official parameters without a place in ours: {sorted(set(converted) - placed)}")
    opt_state = jax.jit(run.tx.init, out_shardings=run.opt_shardings)(params)

    summary = {
        "preset": exp.preset,
        "section": exp.section,
        "checkpoint": str(path),
        "official_global_step": step,
        "saved_step": step,
        "official_parameters": len(table),
        "imported_parameters": len(converted),
        "imported_values": int(sum(math.prod(v.shape) for v in converted.values())),
        "skipped": [r["official"] for r in table if r["ours"] == "skipped"],
        "rotary_permuted": [r["official"] for r in table if "permuted" in r.get("note", "")],
        "opt_state": "fresh (optax init); the official optimiser state is not imported",
        "workdir": str(workdir),
        "git_sha": git_sha(),
        "date": now(),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(workdir / "config.json", experiment_to_dict(exp))
    ckpt = Checkpointer(workdir)
    try:
        meta = {
            "imported_from": "google-research/perceiver-ar checkpoint.dill",
            "official_global_step": step,
            "opt_state": summary["opt_state"],
        }
        ckpt.save(step, {"params": params, "opt_state": opt_state}, meta)
    finally:
        ckpt.close()
    write_json_atomic(workdir / IMPORT_RECORD, {**summary, "mapping": table})
    return summary
