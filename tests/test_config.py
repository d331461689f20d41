"""Presets validate, overrides are typed, serialisation round-trips."""

import dataclasses
import subprocess
import sys

import pytest
from conftest import ROOT

from experiments import SECTIONS
from repro.config import (
    LONG_CONTEXT,
    ConfigError,
    DataConfig,
    apply_overrides,
    experiment_from_dict,
    experiment_to_dict,
    resolve_attention_impl,
    resolve_compute_dtype,
)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_preset_validates_and_builds_its_dataset(section):
    from repro.section import CorpusSection

    mod = SECTIONS[section]
    assert mod.default_preset in mod.presets
    for name, exp in mod.presets.items():
        exp.validate()
        assert exp.preset == name and exp.section == section
        if not isinstance(mod, CorpusSection):  # prepared corpora: tests/test_all_sections.py
            mod.make_dataset(exp)


def test_smoke_presets_are_tiny():
    for mod in SECTIONS.values():
        e = mod.presets["smoke"]
        assert e.model.d_model <= 64 and e.model.num_layers <= 2 and e.train.steps <= 100


def test_round_trip():
    e = SECTIONS["copy"].presets["random_mirrored_131072"]
    assert experiment_from_dict(experiment_to_dict(e)) == e


def test_config_imports_no_section_and_names_an_unregistered_one():
    """repro.config never imports experiments (no import loop): the sections register their data
    configs when imported, and a config of a section none registered says so in one line."""
    probe = "import sys, repro.config; print(sorted(m for m in sys.modules if m.split('.')[0] == 'experiments'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
    d = experiment_to_dict(SECTIONS["copy"].presets["smoke"])
    with pytest.raises(ConfigError, match="no data config is registered for section 'nosuch'"):
        experiment_from_dict({**d, "section": "nosuch"})
    assert type(experiment_from_dict({**d, "data": {}, "section": "nosuch"}).data) is DataConfig


def test_overrides_are_typed():
    e = SECTIONS["copy"].presets["cpu"]
    e2 = apply_overrides(
        e, ["model.num_latents=64", "optim.lr=2e-3", "model.d_input=none", "model.position_table_sizes=3,4"]
    )
    assert e2.model.num_latents == 64 and e2.optim.lr == 2e-3 and e2.model.d_input is None
    assert e2.model.position_table_sizes == (3, 4)
    assert apply_overrides(e, ["model.positions_from_data=false"]).model.positions_from_data is False


@pytest.mark.parametrize(
    "bad",
    [
        "model.nope=1",
        "nogroup.x=1",
        "model.num_latents=1.5",
        "model.num_latents=abc",
        "model.position_encoding=fourier",
        "model.dropout=1.5",
        "model.num_latents=100000",
        "train.grad_accum=3",
        "noequals",
    ],
)
def test_bad_overrides_raise_config_error(bad):
    with pytest.raises(ConfigError):
        apply_overrides(SECTIONS["copy"].presets["cpu"], [bad])


def test_overriding_a_paper_preset_makes_it_custom():
    e = SECTIONS["copy"].presets["random_mirrored_32"]
    assert e.scale == "paper"
    assert apply_overrides(e, ["train.steps=10"]).scale == "custom"
    assert apply_overrides(dataclasses.replace(e, scale="cpu"), ["train.steps=10"]).scale == "cpu"


def test_paper_presets_resolve_per_backend():
    """Every paper preset runs bfloat16 with the fused (cuDNN) attention on a GPU, bfloat16 with
    the dense / chunked kernels on a TPU, and float32 on a CPU; cpu / smoke presets stay float32
    everywhere (their recorded results are float32)."""
    seen = 0
    for sec in SECTIONS.values():
        for name, e in sec.presets.items():
            m = e.model
            if e.scale == "paper":
                seen += 1
                long = m.max_context >= LONG_CONTEXT
                assert (m.resolved_dtype("gpu"), m.resolved_attention("gpu")) == ("bfloat16", "fused"), name
                assert m.resolved_dtype("tpu") == "bfloat16", name
                assert (m.resolved_dtype("cpu"), m.resolved_attention("cpu")) == (
                    "float32", "chunked" if long else "dense"), name  # fmt: skip
            elif e.scale in ("cpu", "smoke"):
                assert m.resolved_dtype("gpu") == "float32", (sec.name, name)
    assert seen >= 8
    assert resolve_attention_impl("chunked", 10, "gpu") == "chunked"  # explicit settings are kept
    assert resolve_compute_dtype("float32", "tpu") == "float32"
    assert resolve_attention_impl("auto", 131072, "cpu") == "chunked"


def test_auto_settings_round_trip_and_show_in_dry_run():
    from repro.dryrun import dry_run

    e = SECTIONS["copy"].presets["random_mirrored_32"]
    assert experiment_from_dict(experiment_to_dict(e)) == e
    r = dry_run(e)
    assert r["compute_dtype"].startswith("float32 (auto") and "bfloat16 on a GPU" in r["compute_dtype"]
    assert r["attention_impl"].startswith("dense (auto") and "fused on a GPU" in r["attention_impl"]
