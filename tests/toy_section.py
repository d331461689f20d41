"""A whole paper section in a few lines, defined in the test suite (no shared file knows it):
a raw layout of ``train/*.txt`` and ``validation/*.txt`` files, one document per file, bytes as
content ids. Used by tests/test_sections.py and tests/test_store.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.config import CorpusData, Experiment, ModelConfig, OptimConfig, TrainConfig
from repro.data.source import DataError, RawDoc, RawFormat, SkipFile, SourceFile
from repro.section import CorpusSection, Metric, Prompts


class ToyFormat(RawFormat):
    section = "toy"

    def scan(self, source: Path) -> dict[str, list[SourceFile]]:
        out = {}
        for split in ("train", "validation"):
            d = Path(source) / split
            if not d.is_dir():
                raise DataError(f"{d}: missing split folder")
            out[split] = [SourceFile(split, p) for p in sorted(d.glob("*.txt"))]
        return out

    def read(self, f: SourceFile, tokenizer):
        b = f.path.read_bytes()
        if not b:
            raise SkipFile("empty file")
        if b.startswith(b"BAD"):
            raise DataError(f"{f.label}: not a toy document")
        yield RawDoc(np.frombuffer(b, np.uint8).copy(), f.path.stem, num_words=len(b.split()), num_bytes=len(b))

    def demo(self, out: Path) -> Path:
        rng = np.random.default_rng(0)
        for split, n in (("train", 12), ("validation", 3)):
            (out / split).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                words = [("abc", "hello", "toy")[int(k)] for k in rng.integers(0, 3, int(rng.integers(5, 30)))]
                (out / split / f"{i:03d}.txt").write_text(" ".join(words))
        return out


@dataclass(frozen=True)
class ToyData(CorpusData, section="toy"):
    corpus: str = "auto"


class ToySection(CorpusSection):
    name = "toy"
    data_config = ToyData
    headline = Metric("word_perplexity", "word perplexity", "perplexity", ".3f")
    raw_format = ToyFormat()
    dataset_name = "toy"
    demo_name = "demo: toy words"
    prepare_preset = "smoke"

    def baselines(self, exp, source, split, num=None):
        return {"uniform": {"value": 256.0, "description": "uniform over bytes, per token"}}

    def prompts(self, exp, source, num, prompt):
        docs = source.eval_documents(exp.data.eval_split, num)
        toks = [d.tokens[:6] for d in docs]
        return Prompts(toks, 8, [d.tokens[6:14] for d in docs])

    def write_samples(self, exp, prompts, generated, outdir: Path, settings):
        from repro.runinfo import write_json_atomic

        rows = [{"prompt": p.tolist(), "output": g.tolist()} for p, g in zip(prompts.tokens, generated, strict=True)]
        write_json_atomic(outdir / "toy.json", {"samples": rows, "settings": settings})
        return {"samples": len(rows)}


SMOKE = Experiment(
    section="toy",
    preset="smoke",
    scale="smoke",
    model=ModelConfig(
        vocab_size=259,
        max_context=16,
        num_latents=8,
        d_model=32,
        num_layers=1,
        cross_heads=2,
        self_heads=2,
        dropout=0.0,
    ),  # fmt: skip
    data=ToyData(eval_examples=0),
    optim=OptimConfig(lr=3e-3, warmup_steps=5),
    train=TrainConfig(steps=12, batch_size=8, log_every=4, eval_every=6, checkpoint_every=6),
)
SECTION = ToySection({"smoke": SMOKE}, "smoke")


def read_json(path: Path):
    return json.loads(Path(path).read_text())
