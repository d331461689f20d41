"""The narrow section contract: a section that defines only a name, a data config, a headline and
a synthetic source (every other hook left at its default) trains, evaluates, samples and is
reported through the functions the CLI calls (repro/app.py, repro/report.py)."""

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest

from repro import app
from repro.checkpoint import BestBy, Checkpointer
from repro.config import DataConfig, Experiment, ModelConfig
from repro.data.source import DatasetInfo, SyntheticSource
from repro.data.text import ByteTokenizer
from repro.data.tokens import EOS_ID, NUM_RESERVED, SOS_ID
from repro.eval.protocols import Document
from repro.report import write_report
from repro.section import SMOKE_OPTIM, SMOKE_TRAIN, Metric, Section

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class AlphabetSource(SyntheticSource):
    """Synthetic documents: SOS, ``length`` letters of the alphabet in order from a random one
    (wrapping after z), EOS; the letters are UTF-8 bytes, so a byte tokenizer decodes them."""

    vocab_size = 256 + NUM_RESERVED
    tokenizer = ByteTokenizer()

    def __init__(self, length: int):
        self.length = length
        self.info = DatasetInfo("alphabet (synthetic)", "default", is_paper_data=False)

    def _documents_BxT(self, rng: np.random.Generator, n: int) -> np.ndarray:
        first_B = rng.integers(0, 26, size=n)
        letters_BxN = np.frombuffer(ALPHABET.encode(), np.uint8)[(first_B[:, None] + np.arange(self.length)) % 26]
        sos, eos = np.full((n, 1), SOS_ID), np.full((n, 1), EOS_ID)
        return np.concatenate([sos, letters_BxN.astype(np.int64) + NUM_RESERVED, eos], axis=1).astype(np.int32)

    def generate(self, rng: np.random.Generator, n: int):
        return self._documents_BxT(rng, n), None

    def eval_documents(self, split: str, num: int = 0) -> list[Document]:
        rng = np.random.default_rng({"train": 1, "validation": 2, "test": 3}[split])
        return [Document(t) for t in self._documents_BxT(rng, num or 8)]


@dataclass(frozen=True)
class AlphabetData(DataConfig, section="alphabet"):
    length: int = 22
    eval_examples: int = 8


class AlphabetSection(Section):
    name = "alphabet"
    data_config = AlphabetData
    headline = Metric("token_accuracy", "next-letter accuracy", "fraction", ".2%", higher_is_better=True)

    def source(self, exp: Experiment, data_dir=None, *, log=None) -> AlphabetSource:
        return AlphabetSource(exp.data.length)


SMOKE = Experiment(
    section="alphabet",
    preset="smoke",
    scale="smoke",
    model=ModelConfig(
        max_context=32, num_latents=8, d_model=32, num_layers=1, cross_heads=2, self_heads=2, dropout=0.0
    ),
    data=AlphabetData(),
    optim=SMOKE_OPTIM,
    train=dataclasses.replace(SMOKE_TRAIN, eval_every=5),  # two evaluations: a best checkpoint to choose
)
SECTION = AlphabetSection({"smoke": SMOKE}, "smoke")


@pytest.fixture(scope="module")
def alphabet_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("alphabet") / "run"
    row = app.run(SECTION, SMOKE, wd, show_progress=False)
    return wd, row


def test_a_minimal_section_runs_evaluates_samples_and_is_reported(alphabet_run, tmp_path):
    wd, row = alphabet_run
    assert row["section"] == "alphabet" and row["headline"]["key"] == "token_accuracy"
    assert row["steps"] == SMOKE.train.steps and (wd / "results.json").is_file()
    # The best checkpoint by the headline (accuracy, higher is better; ties: lower nats/token).
    evals = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in evals if "eval/token_accuracy" in r}
    assert sorted(evals) == [5, 10]
    best = max(evals, key=lambda k: (evals[k]["eval/token_accuracy"], -evals[k]["eval/nats_per_token"]))
    assert row["best_checkpoint_step"] == best
    ckpt = Checkpointer(wd, read_only=True, best=BestBy.headline(SECTION.headline))
    assert ckpt.metadata(10)["metrics"]["eval_token_accuracy"] == evals[10]["eval/token_accuracy"]
    ckpt.close()

    ev, path = app.evaluate_run(SECTION, wd, show_progress=False)
    assert path.is_file() and ev["metrics"]["token_accuracy"] == pytest.approx(row["metrics"]["token_accuracy"])

    summary, outdir = app.sample_run(SECTION, wd, num=2, temperature=0.0)
    got = json.loads((outdir / "samples.json").read_text())
    assert got["summary"] == summary and summary["samples"] == 2 and summary["decoded_as"] == "utf8-bytes:256"
    for r in got["samples"]:
        # Decoded text: the first half of a validation document and its true second half.
        assert r["label"].startswith("validation document ")
        assert isinstance(r["prompt"], str) and isinstance(r["output"], str) and len(r["truth"]) == 11
        assert (r["prompt"] + r["truth"]) in ALPHABET * 2

    summary, outdir = app.sample_run(SECTION, wd, prompt="klm", num=1, temperature=0.0)
    (r,) = json.loads((outdir / "samples.json").read_text())["samples"]
    assert r["label"] == "--prompt" and r["prompt"] == "klm" and r["truth"] is None

    files = write_report({"alphabet": SECTION}, [wd], tmp_path / "out")
    md = files["md"].read_text()
    assert "\n## alphabet\n" in md and "next-letter accuracy, fraction; higher is better" in md
    assert [k for k in files if k.startswith("curves_alphabet_smoke")] and "![alphabet/smoke curves]" in md


def test_the_template_is_a_working_section_that_is_not_discovered():
    """experiments/_template.py (a leading underscore: never discovered) defines a valid section:
    its presets round-trip, its source gives training batches, its default prompts are halves."""
    import experiments._template as template
    from experiments import SECTIONS
    from repro.config import experiment_from_dict, experiment_to_dict

    sec = template.SECTION
    assert isinstance(sec, Section) and sec.name == "template" and "template" not in SECTIONS
    exp = sec.preset(None)
    assert experiment_from_dict(json.loads(json.dumps(experiment_to_dict(exp)))) == exp
    source = sec.source(exp)
    batch = sec.pipeline(exp, source).train_batch(0, 4)
    assert batch["inputs"].shape == (4, exp.model.max_context)
    prompts = sec.prompts(exp, source, 2, None)
    assert [len(p) for p in prompts.tokens] == [16, 16] and prompts.num_new == 16
    np.testing.assert_array_equal(np.diff(prompts.tokens[0][1:]) % 256, 1)  # counting up after SOS
