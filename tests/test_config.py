"""Presets validate, overrides are typed, serialisation round-trips."""

import dataclasses

import pytest

from experiments import SECTIONS
from repro.config import ConfigError, apply_overrides, experiment_from_dict, experiment_to_dict


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
        "nosection.x=1",
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
