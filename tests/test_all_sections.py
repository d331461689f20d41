"""Every section's smoke preset end to end on its demo corpus, through the code `repro run /
eval / sample` runs: prepare (real prepare code on the demo raw layout), train, evaluate under
both protocols, sample, and one-schema results that name the demo corpus. The demo corpora are
built once per session (the MAESTRO chorales limited to a few pieces, to stay fast)."""

import dataclasses
import json

import pytest

from experiments import SECTIONS
from repro import app
from repro.results import read_row
from repro.section import CorpusSection

SMOKE = sorted(n for n, s in SECTIONS.items() if "smoke" in s.presets)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _prepare_demo(sec, exp, data_dir):
    if not isinstance(sec, CorpusSection):
        return
    if sec.name == "maestro":  # the full demo converts 410 chorales (~2 min): a few pieces suffice here
        from repro.data.demos.maestro import build_demo

        raw = data_dir / "maestro-raw"
        src = build_demo(raw, limit=8).source
        sec.prepare(dataclasses.replace(exp.data, corpus="demo"), src, data_dir)  # the demo corpus, as built
    elif sec.name == "pg19":
        from repro.data.demos.pg19 import find_austen_deb

        if find_austen_deb() is None:
            pytest.skip("the PG-19 demo needs r-cran-janeaustenr's .deb: run `make setup`")


@pytest.mark.e2e
@pytest.mark.parametrize("name", SMOKE)
def test_smoke_preset_end_to_end(name, data_dir, tmp_path):
    sec = SECTIONS[name]
    exp = sec.presets["smoke"]
    _prepare_demo(sec, exp, data_dir)
    wd = tmp_path / "run"
    row = app.run(sec, exp, wd, data_dir=data_dir, show_progress=False)
    res = read_row(wd / "results.json")
    assert res["section"] == name and res["scale"] == "smoke" and res["reproduction"] is False
    assert res["headline"]["value"] == row["metrics"][sec.headline.key]
    if isinstance(sec, CorpusSection):
        # (ImageNet adds the resolution it downsampled the demo images to)
        assert res["dataset"]["name"].startswith(sec.demo_name) and not res["dataset"]["is_paper_data"]
        assert res["dataset"]["corpus"] == "demo"
        assert res["dataset"]["manifest_hash"]
    # Every number of the paper the section compares with is a metric its evaluation emits.
    for p in sec.paper_numbers:
        assert p.metric in res["metrics"], (name, p.metric)
        assert p.unit == sec.headline.unit or p.metric != sec.headline.key, (name, p)
    for b in res["baselines"].values():
        assert isinstance(b["value"], float) and b["description"]
    proto = sec.default_protocol(exp)
    # stride1 is one forward per target: over a whole book (pg19, wikitext103) that is ~10^5
    # windows; the toy section (tests/test_sections.py) covers stride1 on text documents.
    for protocol in (proto,) if name in ("pg19", "wikitext103") else (proto, "stride1"):
        ev, path = app.evaluate_run(sec, wd, protocol=protocol, max_examples=1, data_dir=data_dir,
                                    show_progress=False)  # fmt: skip
        assert read_row(path)["protocol"] == protocol and ev["kind"] == "eval"
    summary, outdir = app.sample_run(sec, wd, num=1, data_dir=data_dir)
    assert summary and any(outdir.iterdir())
    json.dumps(summary)


def test_paper_presets_without_data_name_the_prepare_command(tmp_path):
    for name, sec in SECTIONS.items():
        if not isinstance(sec, CorpusSection):
            continue
        paper = next(e for e in sec.presets.values() if e.scale == "paper")
        with pytest.raises(app.UserError, match=f"repro data prepare {name} --source DIR"):
            app.pipeline_for(sec, paper, tmp_path)


def test_a_cpu_preset_on_real_data_asks_for_that_corpus(tmp_path):
    sec = SECTIONS["imagenet64"]
    exp = sec.presets["cpu"]
    real = dataclasses.replace(exp, data=dataclasses.replace(exp.data, corpus="main"))
    with pytest.raises(app.UserError, match="ImageNet 64x64 .* corpus is not prepared"):
        app.pipeline_for(sec, real, tmp_path)


@pytest.mark.e2e
@pytest.mark.parametrize("layout", ["tar", "npz"])
def test_imagenet_other_layouts_prepare_train_and_evaluate(layout, tmp_path):
    """The tar and Chrabaszcz-npz layouts through the real prepare code to a trained, evaluated run;
    the npz variant is never labelled as the paper's data."""
    from repro.data import imagenet64
    from repro.data.store import verify

    sec = SECTIONS["imagenet64"]
    # Demo images without the demo marker look like a user's own data: prepare them as the demo corpus.
    exp = sec.presets["smoke"]
    exp = dataclasses.replace(exp, data=dataclasses.replace(exp.data, corpus="demo"))
    src = imagenet64.FORMAT.demo(tmp_path / "raw", layout=layout, limit=24)
    m = sec.prepare(exp.data, src, tmp_path / "data")
    verify(sec.corpus_dir(exp.data, tmp_path / "data"))
    assert m["source"]["variant"] == {"tar": "tar", "npz": "npz-chrabaszcz2017"}[layout]
    assert m["splits"]["train"]["documents"] > 0 and m["splits"]["validation"]["documents"] > 0
    assert m["is_paper_data"] is False  # a demo corpus either way
    if layout == "npz":
        assert "different downsampling" in sec.dataset_label(src) and not sec.is_paper_source(src)
    row = app.run(sec, exp, tmp_path / "run", data_dir=tmp_path / "data", show_progress=False)
    assert row["dataset"]["variant"] == m["source"]["variant"] and row["metrics"]["bits_per_dim"] > 0


def test_pg19_paper_preset_parameter_count():
    from repro.flops import param_count

    n = param_count(SECTIONS["pg19"].presets["paper"].model)
    assert abs(n - 974.6e6) / 974.6e6 < 0.005, n


def test_audio_samples_respect_the_code_levels():
    import numpy as np
    from flax import nnx

    from repro.model import PerceiverAR
    from repro.sample.sampler import SampleConfig, generate

    sec = SECTIONS["maestro_audio"]
    exp = sec.presets["smoke"]
    spec = sec.sampling(exp)
    model = PerceiverAR(exp.model, rngs=nnx.Rngs(0))
    out = generate(model, [np.array([2], np.int32)] * 2, 24, SampleConfig(temperature=1.0, seed=3),
                   allowed=spec.allowed)  # fmt: skip
    L = exp.data.levels
    for g in out.generated:
        ids = g[g >= 3] - 3
        assert len(ids) == 24
        np.testing.assert_array_equal(ids // 1024, np.arange(24) % L)  # level (offset - 1) mod L


def test_image_samples_are_sub_pixel_values_then_eos():
    import numpy as np
    from flax import nnx

    from repro.model import PerceiverAR
    from repro.sample.sampler import SampleConfig, generate

    sec = SECTIONS["imagenet64"]
    exp = sec.presets["smoke"]  # 8x8: 192 sub-pixels
    spec = sec.sampling(exp)
    model = PerceiverAR(exp.model, rngs=nnx.Rngs(0))
    out = generate(model, [np.array([2], np.int32)] * 2, 200, SampleConfig(temperature=1.0, seed=1),
                   positions_fn=spec.positions_fn, allowed=spec.allowed)  # fmt: skip
    for g in out.generated:
        assert len(g) == 193 and g[-1] == 1  # 192 values, then EOS (the only token allowed there)
        assert ((g[:-1] >= 3) & (g[:-1] < 259)).all()
