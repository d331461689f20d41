"""Fidelity to the official code (google-research/perceiver-ar, perceiver_ar/perceiver_ar_model.py).

1. The frequency ladders, read off our encodings and pinned to values computed by hand from the
   official definitions: rotary ``_make_rotation_matrices`` (``W ** (-i / (n - 1))``, linspace with
   its endpoint) and ``generate_sinusoidal_features`` (``10000 ** (-i / (h - 1))``, sin | cos), plus
   numpy transcriptions of the official functions compared with ours.
2. Learned ('random') position tables start as hk.Embed's default: truncated normal, stddev 1.
3. ``repro.official.import_official`` on synthetic official-layout checkpoints made here (official
   Haiku names and shapes, pickled as the official code does, through a stand-in for Haiku's
   FlatMapping class and dill's array / namedtuple reducers): every parameter lands exactly once,
   the imported model's logits equal those of our model with the same values, and malicious or
   mismatched files are refused with one line.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pickle
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.copy import CopyData
from repro.checkpoint import Checkpointer
from repro.config import Experiment, ModelConfig, TrainConfig, experiment_from_dict
from repro.model import PerceiverAR
from repro.model.positions import apply_rotary, rotary_dims, rotary_permutation, sinusoidal_features
from repro.official import (
    IMPORT_RECORD,
    OfficialCheckpointError,
    convert_params,
    find_checkpoint,
    import_official,
    load_official_checkpoint,
)
from repro.train.state import build

# ---------------------------------------------------------------------------------------- rotary

# (rotated channels R, max wavelength W, {pair i: official inverse frequency}), by hand from
# freq = W ** ((2 / R) * linspace(0, R/2, R/2)), i.e. W ** (-i / (R/2 - 1)): 1 down to exactly 1/W.
ROTARY_LADDERS = [
    (2, 4096.0, {0: 1.0}),  # one pair: linspace(0, 1, 1) = [0]
    (4, 16.0, {0: 1.0, 1: 0.0625}),
    # W = 2**10: 2**(-10/3), 2**(-20/3), 2**-10. (The earlier ladder W ** (-i / 4) ended at
    # 1024 ** -0.75 = 0.0055243 instead of 1/1024.)
    (8, 1024.0, {0: 1.0, 1: 0.09921256574801246, 2: 0.009843133202303695, 3: 0.0009765625}),
    # W = 2**17 (random_mirrored_131072's context), 32 pairs: 2**(-17 * 16 / 31) mid-way, 2**-17 last.
    (64, 131072.0, {0: 1.0, 16: 0.0022840444640579833, 31: 7.62939453125e-06}),
]


def rotary_frequencies(R: int, W: float, K: int) -> np.ndarray:
    """Angular frequency of each rotated pair of ``apply_rotary``, read off its output: head j
    holds the unit vector e_j, rotated at position 1 to (cos f_j, sin f_j) in channels (j, j + R/2)."""
    half = R // 2
    j = np.arange(half)
    x = np.zeros((1, 1, half, K), np.float32)
    x[0, 0, j, j] = 1.0
    out = np.asarray(apply_rotary(jnp.asarray(x), jnp.ones((1, 1), jnp.int32), R / K, W))[0, 0]
    return np.arctan2(out[j, j + half], out[j, j])


@pytest.mark.parametrize("R,W,expected", ROTARY_LADDERS, ids=[f"R{r}" for r, _, _ in ROTARY_LADDERS])
def test_rotary_ladder_is_official(R, W, expected):
    for K in (R, 2 * R):  # all channels rotated, or half of them (fraction 0.5)
        f = rotary_frequencies(R, W, K)
        assert len(f) == R // 2
        for i, v in expected.items():
            np.testing.assert_allclose(f[i], v, rtol=2e-5, err_msg=f"pair {i} of R={R}, K={K}")
        assert np.all(np.diff(f) < 0) or len(f) == 1


def official_rotary(x: np.ndarray, fraction: float, max_wavelength: float, positions: np.ndarray) -> np.ndarray:
    """Transcription (float64) of the official _apply_rotary_encoding_to_subset ->
    _apply_rotary_encoding -> _make_rotation_matrices / _splice_array, all heads rotated."""
    R = math.floor(x.shape[-1] * fraction / 2.0) * 2
    x_r, x_p = x[..., :R], x[..., R:]
    num_bands = R // 2
    freq = max_wavelength ** ((2.0 / R) * np.linspace(0, num_bands, num_bands))
    inv_freq = np.repeat(1.0 / freq, 2, axis=0)
    radians = np.einsum("bi,j->bij", positions, inv_freq)[:, :, None, :]  # broadcast over heads
    spliced = np.stack((-x_r[..., 1::2], x_r[..., ::2]), axis=-1).reshape(x_r.shape)
    return np.concatenate([x_r * np.cos(radians) + spliced * np.sin(radians), x_p], axis=-1)


@pytest.mark.parametrize("K,fraction", [(16, 0.5), (8, 1.0), (12, 0.5)])
def test_rotary_equals_official_up_to_the_channel_permutation(K, fraction):
    """Our channel c is the official channel rotary_permutation[c]; then ours == official."""
    rng = np.random.default_rng(0)
    x_off = rng.normal(size=(2, 5, 3, K))
    pos = rng.integers(0, 300, size=(2, 5))
    perm = rotary_permutation(K, fraction)
    R = rotary_dims(K, fraction)
    assert sorted(perm) == list(range(K)) and np.all(perm[R:] == np.arange(R, K))
    want = official_rotary(x_off, fraction, 512.0, pos)[..., perm]
    got = np.asarray(apply_rotary(jnp.asarray(x_off[..., perm], jnp.float32), jnp.asarray(pos), fraction, 512.0))
    np.testing.assert_allclose(got, want, atol=1e-4)


# ------------------------------------------------------------------------------------ sinusoidal

# (table width, {pair i: official inverse frequency}) by hand from div_term = exp(i * -log(1e4) / (h - 1)),
# i.e. 10000 ** (-i / (h - 1)) for h = width // 2 pairs, whatever the context length.
SINUSOIDAL_LADDERS = [
    (6, {0: 1.0, 1: 0.01, 2: 1e-4}),
    (7, {0: 1.0, 1: 0.01, 2: 1e-4}),  # odd: 3 pairs and a zero channel
    (16, {0: 1.0, 1: 0.2682695795279726, 7: 1e-4}),  # 10 ** (-4/7)
    (1024, {0: 1.0, 73: 0.2682695795279726, 511: 1e-4}),  # 73 / 511 = 1/7
]


@pytest.mark.parametrize("dim,expected", SINUSOIDAL_LADDERS, ids=[f"d{d}" for d, _ in SINUSOIDAL_LADDERS])
def test_sinusoidal_ladder_is_official(dim, expected):
    half = dim // 2
    feats = np.asarray(sinusoidal_features(jnp.ones((1, 1), jnp.int32), dim))[0, 0]
    assert feats.shape == (dim,)
    f = np.arctan2(feats[:half], feats[half : 2 * half])  # sin first, cos second
    for i, v in expected.items():
        np.testing.assert_allclose(f[i], v, rtol=2e-5, err_msg=f"pair {i} of width {dim}")
    if dim % 2:
        assert feats[-1] == 0.0


def official_sinusoidal_rows(size: int, positions: np.ndarray, min_scale=1.0, max_scale=10000.0) -> np.ndarray:
    """Transcription of the official generate_sinusoidal_features, at the given table rows."""
    pe = np.zeros((len(positions), size), dtype=np.float32)
    position = np.asarray(positions)[:, np.newaxis]
    scale_factor = -np.log(max_scale / min_scale) / (size // 2 - 1)
    div_term = min_scale * np.exp(np.arange(0, size // 2) * scale_factor)
    pe[:, : size // 2] = np.sin(position * div_term)
    pe[:, size // 2 : 2 * (size // 2)] = np.cos(position * div_term)
    return pe


@pytest.mark.parametrize("size", [1024, 33])
def test_sinusoidal_equals_the_official_table_at_long_positions(size):
    """The official table is float64-computed; ours matches it to ~1e-6 up to 131k positions
    (a plain float32 ``p * f`` would be ~1e-2 off there)."""
    rows = np.array([0, 1, 2, 1000, 65535, 131071, 131072, 1_000_003])
    got = np.asarray(sinusoidal_features(jnp.asarray(rows)[None], size))[0]
    np.testing.assert_allclose(got, official_sinusoidal_rows(size, rows), atol=3e-6, rtol=0)


def test_model_sinusoidal_default_is_10000_whatever_the_context():
    cfg = ModelConfig(vocab_size=9, max_context=21, num_latents=4, d_model=16, num_layers=1, cross_heads=2,
                      self_heads=2, position_encoding="sinusoidal", positions_from_data=True)  # fmt: skip
    model = random_model(cfg)
    tokens = jnp.full((1, 5), 4, jnp.int32)
    pos = jnp.array([[1, 2, 3, 20, 21]], jnp.int32)
    added = np.asarray(model.embed_inputs(tokens, pos[..., None]) - model.embed(tokens))[0]
    np.testing.assert_allclose(added, official_sinusoidal_rows(16, np.asarray(pos[0])), atol=2e-6)


def test_learned_tables_start_as_hk_embed_default():
    """hk.Embed default init: truncated normal (at +-2), stddev 1 (sample std 0.88)."""
    assert ModelConfig().learned_position_init == 1.0
    cfg = ModelConfig(vocab_size=9, max_context=255, num_latents=4, d_model=16, num_layers=1, cross_heads=2,
                      self_heads=2, position_encoding="learned", positions_from_data=True)  # fmt: skip
    state = jax.jit(lambda: nnx.state(PerceiverAR(cfg, rngs=nnx.Rngs(3)), nnx.Param))()  # one compile
    table = np.asarray(state["pos_tables"][0]["embedding"][...])
    assert table.shape == (256, 16)
    assert np.abs(table).max() <= 2.0  # a normal(1) table of 4096 values has ~190 beyond 2
    assert 0.84 < table.std() < 0.92  # std of N(0, 1) truncated at +-2: 0.880
    assert abs(table.mean()) < 0.05


# ------------------------------------------------------------------------ synthetic official files


@pytest.fixture
def fakes(monkeypatch):
    """Stand-ins, under their real module paths, for the classes and functions an official
    checkpoint's pickle references: Haiku's FlatMapping (how Haiku pickles its FlatMap) and
    dill's reducers for ndarrays and namedtuple classes (dill 0.3.x). Neither package is here."""
    ds = types.ModuleType("haiku._src.data_structures")

    class FlatMapping(dict):
        def __reduce__(self):
            return (FlatMapping, (dict(self),))

    FlatMapping.__module__, FlatMapping.__qualname__ = ds.__name__, "FlatMapping"
    ds.FlatMapping = FlatMapping
    dd = types.ModuleType("dill._dill")

    def _create_array(f, args, state, npdict=None):  # dill's, for the pickling side only
        raise AssertionError("not called: the importer never imports dill")

    def _create_namedtuple(name, fieldnames, modulename, defaults=None):
        raise AssertionError("not called")

    for fn in (_create_array, _create_namedtuple):
        fn.__module__, fn.__qualname__ = dd.__name__, fn.__name__
        setattr(dd, fn.__name__, fn)
    for name, mod in [
        ("haiku", types.ModuleType("haiku")),
        ("haiku._src", types.ModuleType("haiku._src")),
        (ds.__name__, ds),
        ("dill", types.ModuleType("dill")),
        (dd.__name__, dd),
    ]:
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(FlatMapping=FlatMapping, dill=dd)


class DillLikePickler(pickle.Pickler):
    """Writes what dill 0.3.x writes for this data: ndarrays through ``dill._dill._create_array``
    and namedtuple classes (optax states) through ``dill._dill._create_namedtuple``."""

    def __init__(self, f, dill_module, protocol: int):
        super().__init__(f, protocol=protocol)
        self.dd = dill_module

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            fn, args, state = obj.__reduce__()
            return (self.dd._create_array, (fn, args, state, None))
        if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            return (self.dd._create_namedtuple, (obj.__name__, obj._fields, obj.__module__))
        return NotImplemented


def to_official_pairs(x: np.ndarray, heads: int, head_dim: int, fraction: float) -> np.ndarray:
    """Our rotary layout (j, j + R/2) of each head's output columns -> the official (2j, 2j+1)."""
    R = math.floor(head_dim * fraction / 2) * 2
    half = R // 2
    ours = x.reshape(*x.shape[:-1], heads, head_dim)
    off = ours.copy()
    off[..., 0:R:2], off[..., 1:R:2] = ours[..., :half], ours[..., half:R]
    return off.reshape(x.shape)


def to_official(model: PerceiverAR, cfg: ModelConfig) -> dict[str, dict[str, np.ndarray]]:
    """Our model's parameters under the official Haiku names, written out by hand from
    perceiver_ar_model.py (``~/`` for modules built in __init__, ``_1, _2`` for repeats)."""
    T = "perceiver_ar/~/"
    rotary = cfg.position_encoding == "rotary"

    def a(v):
        return np.array(v[...], np.float32)

    def lin(m, heads: int = 0):
        w, b = a(m.kernel), a(m.bias)
        if heads and rotary:
            K = w.shape[1] // heads
            w, b = (to_official_pairs(x, heads, K, cfg.rotary_fraction) for x in (w, b))
        return {"w": w, "b": b}

    def ln(m):
        return {"scale": a(m.scale), "offset": a(m.bias)}

    p = {T + "embed": {"embeddings": a(model.embed.embedding)}}
    sizes = cfg.position_table_sizes or (cfg.max_context + 1,)
    for k, n in enumerate(sizes):
        if cfg.position_encoding == "learned":
            p[T + f"embed_{k + 1}"] = {"embeddings": a(model.pos_tables[k].embedding)}
        elif cfg.position_encoding == "sinusoidal":
            p[T + f"embed_{k + 1}"] = {"embeddings": official_sinusoidal_rows(cfg.input_width, np.arange(n))}
    c, x = T + "cross_attention", model.cross
    p |= {
        c + "/layer_norm": ln(x.ln_q),
        c + "/layer_norm_1": ln(x.ln_kv),
        c + "/layer_norm_2": ln(x.ln_mlp),
        c + "/attention/linear": lin(x.attn.q, cfg.cross_heads),
        c + "/attention/linear_1": lin(x.attn.k, cfg.cross_heads),
        c + "/attention/linear_2": lin(x.attn.v),
        c + "/attention/linear_3": lin(x.attn.o),
        c + "/dense/linear": lin(x.mlp.up),
        c + "/dense/linear_1": lin(x.mlp.down),
        T + "linear": lin(model.z_linear),
    }
    for i, layer in enumerate(model.layers):
        s = T + ("self_attention" if i == 0 else f"self_attention_{i}")
        p |= {
            s + "/layer_norm": ln(layer.ln_attn),
            s + "/layer_norm_1": ln(layer.ln_mlp),
            s + "/attention/linear": lin(layer.attn.q, cfg.self_heads),
            s + "/attention/linear_1": lin(layer.attn.k, cfg.self_heads),
            s + "/attention/linear_2": lin(layer.attn.v),
            s + "/attention/linear_3": lin(layer.attn.o),
            s + "/dense/linear": lin(layer.mlp.up),
            s + "/dense/linear_1": lin(layer.mlp.down),
        }
    p |= {"perceiver_ar/layer_norm": ln(model.ln_final), T + "logits": lin(model.logits)}
    return p


def official_opt_state(params: dict) -> tuple:
    """The official optimiser chain's state (clip, Adam, schedule, scale): optax namedtuples
    holding jax arrays, as the official checkpoint has."""
    tx = optax.chain(
        optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale_by_schedule(lambda s: 3e-4), optax.scale(-1)
    )
    return tx.init({m: dict(g) for m, g in params.items()})


def write_official(path: Path, params, fakes, *, global_step=25000, protocol=4, dill_like=True, wrap=True):
    """An official-style checkpoint.dill of ``params`` (module -> name -> array)."""
    fm = fakes.FlatMapping if wrap else dict
    state = {
        "global_step": global_step,
        "params": fm({m: fm(g) for m, g in params.items()}),
        "state": fm({}),
        "opt_state": official_opt_state(params),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        (DillLikePickler(f, fakes.dill, protocol) if dill_like else pickle.Pickler(f, protocol=protocol)).dump(state)
    return path


def tiny_exp(**model_kw) -> Experiment:
    base = dict(vocab_size=11, max_context=12, num_latents=5, d_model=16, d_input=8, num_layers=2, cross_heads=2,
                self_heads=4, cross_widening=2, self_widening=3, dropout=0.0, final_init_zeros=False)  # fmt: skip
    base.update(model_kw)
    return Experiment(section="copy", preset="tiny_official", scale="custom", model=ModelConfig(**base),
                      data=CopyData(seq_len=12), train=TrainConfig(batch_size=2, steps=10)).validate()  # fmt: skip


def random_model(cfg: ModelConfig, seed: int = 0) -> PerceiverAR:
    """Our model with every parameter random (also biases and LayerNorms, which init as 0 / 1);
    filled from numpy into an abstract model (eager initialisers would compile per shape)."""
    model = nnx.eval_shape(lambda: PerceiverAR(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda x: jnp.asarray(0.5 * rng.normal(size=x.shape), x.dtype), state))
    return model


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens, positions):
    return nnx.merge(graphdef, state)(tokens, positions)


def logits(model: PerceiverAR, tokens, positions) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(_forward(graphdef, state, tokens, positions))


VARIANTS = {
    # name: (model overrides, pickling: dill-like?, protocol, Haiku FlatMapping?, global_step)
    # Head widths 8: 4 rotated channels per head, so the (2j, 2j+1) -> (j, j+R/2) permutation is not trivial.
    "rotary": (dict(position_encoding="rotary", cross_heads=1, self_heads=2), True, 4, True, 25000),
    "learned_3d": (
        dict(position_encoding="learned", positions_from_data=True, position_table_sizes=(5, 4, 3)),
        False,
        2,
        True,
        np.int64(7),
    ),  # fmt: skip
    "sinusoidal": (dict(position_encoding="sinusoidal", positions_from_data=True), False, 5, False, np.array([3, 3])),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_import_round_trip(variant, fakes, tmp_path):
    model_kw, dill_like, protocol, wrap, gstep = VARIANTS[variant]
    exp = tiny_exp(**model_kw)
    cfg = exp.model
    model = random_model(cfg)
    official = to_official(model, cfg)
    ckpt_root = tmp_path / "release" / "random_mirrored_tiny"
    write_official(ckpt_root / "models/latest/step_1_2022-06-01T00:00:00/checkpoint.dill", official, fakes,
                   global_step=gstep, protocol=protocol, dill_like=dill_like, wrap=wrap)  # fmt: skip
    path = write_official(ckpt_root / "models/latest/step_9_2022-06-02T00:00:00/checkpoint.dill", official, fakes,
                          global_step=gstep, protocol=protocol, dill_like=dill_like, wrap=wrap)  # fmt: skip
    workdir = tmp_path / "run"
    summary = import_official(tmp_path / "release", exp, workdir)  # finds the highest step itself
    step = int(np.asarray(gstep).reshape(-1)[0])

    our_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    n_official = sum(len(g) for g in official.values())
    assert summary["checkpoint"] == str(path) and summary["saved_step"] == step == summary["official_global_step"]
    assert summary["official_parameters"] == n_official
    assert summary["imported_parameters"] == len(our_paths)
    assert summary["skipped"] == (["perceiver_ar/~/embed_1/embeddings"] if variant == "sinusoidal" else [])
    assert len(summary["rotary_permuted"]) == (4 * (1 + cfg.num_layers) if variant == "rotary" else 0)
    record = json.loads((workdir / IMPORT_RECORD).read_text())
    official_keys = [f"{m}/{n}" for m, g in official.items() for n in g]
    assert sorted(r["official"] for r in record["mapping"]) == sorted(official_keys)
    landed = [r["ours"] for r in record["mapping"] if r["ours"] != "skipped"]
    assert sorted(landed) == sorted(".".join(map(str, p)) for p in our_paths)  # each exactly once

    # The workdir is what `repro eval` / `repro sample` read: config.json + the latest checkpoint.
    assert experiment_from_dict(json.loads((workdir / "config.json").read_text())) == exp
    r = build(exp, init=False)
    ck = Checkpointer(workdir)
    assert ck.latest_step() == step
    meta = ck.metadata(step)
    assert meta["official_global_step"] == step and "fresh" in meta["opt_state"]
    restored = ck.restore(step, r.abstract)
    ck.close()
    ours = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for p, v in nnx.to_flat_state(restored["params"]):
        np.testing.assert_array_equal(np.asarray(v[...]), np.asarray(ours[p][...]), err_msg=str(p))

    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(3, cfg.vocab_size, size=(3, cfg.max_context)), jnp.int32)
    if cfg.positions_from_data:
        sizes = cfg.position_table_sizes or (cfg.max_context + 1,)
        positions = jnp.asarray(np.stack([rng.integers(0, n, size=(3, cfg.max_context)) for n in sizes], -1), jnp.int32)
    else:
        positions = None
    imported = nnx.merge(r.graphdef, restored["params"])
    want, got = logits(model, tokens, positions), logits(imported, tokens, positions)
    assert np.abs(want).max() > 0.1
    np.testing.assert_array_equal(got, want)


def test_find_checkpoint_forms(tmp_path):
    d = tmp_path / "models/latest"
    for s in (3, 12, 100):
        (d / f"step_{s}_2022-01-0{s % 9}T00:00:00").mkdir(parents=True)
        (d / f"step_{s}_2022-01-0{s % 9}T00:00:00/checkpoint.dill").write_bytes(b"")
    best = d / "step_100_2022-01-01T00:00:00/checkpoint.dill"
    assert find_checkpoint(tmp_path) == best
    assert find_checkpoint(best.parent) == best == find_checkpoint(best)
    with pytest.raises(OfficialCheckpointError, match="no official checkpoint"):
        find_checkpoint(tmp_path / "models")  # nothing at models/latest/*/ below models/


# ------------------------------------------------------------------------------------- refusals


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and isinstance(excinfo.value, ValueError)
    return msg


class _Call:
    """An object whose pickle calls ``fn(*args)`` when loaded (what a malicious file does)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize(
    "payload,ref",
    [
        (lambda m: _Call(os.system, f"touch {m}"), "system"),
        (lambda m: _Call(eval, f"open({str(m)!r}, 'w')"), "builtins.eval"),
        (lambda m: _Call(functools.partial(os.system, f"touch {m}")), "functools.partial"),
        (lambda m: _Call(getattr, _Call(__import__, "os"), "system"), "builtins.getattr"),
    ],
    ids=["os.system", "eval", "partial", "getattr"],
)
def test_malicious_pickle_is_refused_without_running(payload, ref, fakes, tmp_path):
    marker = tmp_path / "pwned"
    params = {"perceiver_ar/~/embed": {"embeddings": np.zeros((2, 2), np.float32)}, "x": {"y": payload(marker)}}
    path = tmp_path / "checkpoint.dill"
    with path.open("wb") as f:
        pickle.dump({"global_step": 1, "params": fakes.FlatMapping(params)}, f, protocol=4)
    with pytest.raises(OfficialCheckpointError) as e:
        import_official(path, tiny_exp(), tmp_path / "run")
    msg = one_line(e)
    assert "refusing to load" in msg and ref in msg and str(path) in msg
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_non_float_arrays_and_bad_files_are_refused(tmp_path):
    path = tmp_path / "checkpoint.dill"
    path.write_bytes(pickle.dumps({"params": {"m": {"w": np.array(["a"], dtype=object)}}}))
    with pytest.raises(OfficialCheckpointError, match="m/w is not a floating-point array") as e:
        load_official_checkpoint(path)
    one_line(e)
    path.write_bytes(pickle.dumps({"params": {"m": {"w": np.ones(3)}}})[:-20])
    with pytest.raises(OfficialCheckpointError, match="not a readable official checkpoint") as e:
        load_official_checkpoint(path)
    one_line(e)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(OfficialCheckpointError, match="no 'params' mapping") as e:
        load_official_checkpoint(path)
    one_line(e)


@pytest.fixture(scope="module")
def rotary_official():
    exp = tiny_exp(position_encoding="rotary", cross_heads=1, self_heads=2)
    return exp, to_official(random_model(exp.model), exp.model)


def _edited(official, edit):
    p = {m: dict(g) for m, g in official.items()}
    edit(p)
    return p


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda p: p["perceiver_ar/~/self_attention_1/dense/linear"].update(w=np.zeros((16, 47), np.float32)),
            r"parameter perceiver_ar/~/self_attention_1/dense/linear/w has shape \(16, 47\), the tiny_official "
            r"model expects \(16, 48\)",
        ),
        (lambda p: p["perceiver_ar/~/logits"].pop("b"), "missing parameter perceiver_ar/~/logits/b"),
        (
            lambda p: p.update({"perceiver_ar/~/z_pos_enc": {"pos_embs": np.zeros((2, 16), np.float32)}}),
            "parameter perceiver_ar/~/z_pos_enc/pos_embs has no place in the tiny_official model",
        ),
    ],
    ids=["shape", "missing", "unmapped"],
)
def test_mismatched_checkpoint_names_the_parameter(edit, match, rotary_official, fakes, tmp_path):
    exp, official = rotary_official
    path = write_official(tmp_path / "checkpoint.dill", _edited(official, edit), fakes)
    with pytest.raises(OfficialCheckpointError, match=match) as e:
        import_official(path, exp, tmp_path / "run")
    one_line(e)
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_preset_is_refused(rotary_official):
    exp, official = rotary_official
    deeper = dataclasses.replace(exp, model=dataclasses.replace(exp.model, num_layers=3))
    with pytest.raises(OfficialCheckpointError, match="missing parameter perceiver_ar/~/self_attention_2/layer_norm"):
        convert_params(official, deeper)
    absolute = dataclasses.replace(exp, model=dataclasses.replace(exp.model, position_encoding="sinusoidal"))
    with pytest.raises(OfficialCheckpointError, match="missing parameter perceiver_ar/~/embed_1/embeddings"):
        convert_params(official, absolute)


def test_sinusoidal_table_of_another_formula_is_refused():
    exp = tiny_exp(position_encoding="sinusoidal", positions_from_data=True)
    official = to_official(random_model(exp.model), exp.model)
    rows = np.arange(exp.model.max_context + 1)
    official["perceiver_ar/~/embed_1"] = {"embeddings": official_sinusoidal_rows(8, rows, max_scale=13.0)}
    with pytest.raises(OfficialCheckpointError, match="frozen sinusoidal table perceiver_ar/~/embed_1/embeddings"):
        convert_params(official, exp)


def test_refuses_a_workdir_that_holds_a_run(rotary_official, fakes, tmp_path):
    exp, official = rotary_official
    path = write_official(tmp_path / "checkpoint.dill", official, fakes)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(OfficialCheckpointError, match="already holds a run"):
        import_official(path, exp, tmp_path / "run")
