"""What the text sections (PG-19, WikiText-103) share: the tokenizer options of their data config,
word-level perplexity as the headline, the unigram baseline, and text samples (continuations of
validation prompts beside the true continuation, decoded to plain text)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repro.config import ConfigError, CorpusData, Experiment, ModelConfig
from repro.data.tokens import NUM_RESERVED
from repro.eval.baselines import unigram
from repro.section import CorpusSection, Metric, Prompts, SamplingSpec


@dataclass(frozen=True)
class TextData(CorpusData):
    """A text corpus's tokenizer: "sentencepiece" (trained on the training split by
    ``repro data prepare``, seeded), "word" (WikiText-103's words), "bytes", or a path to a
    user's SentencePiece ``.model``."""

    tokenizer: str = "sentencepiece"
    vocab_size: int = 32000  # SentencePiece pieces (the model's vocabulary is this + 3 reserved ids)
    tokenizer_seed: int = 0
    max_train_bytes: int = 100_000_000  # text sampled (seeded) to train SentencePiece on
    prompt_tokens: int = 256  # `repro sample`: prompt length from the validation split ...
    sample_tokens: int = 128  # ... and tokens generated after it

    def validate(self) -> None:
        super().validate()
        if self.vocab_size < 2:
            raise ConfigError(f"data.vocab_size must be >= 2, got {self.vocab_size}")
        for name in ("max_train_bytes", "prompt_tokens", "sample_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")


def text_model(vocab: int, **kw) -> ModelConfig:
    """A text model: ``vocab`` tokenizer ids + the 3 reserved ids, rotary positions."""
    return ModelConfig(vocab_size=vocab + NUM_RESERVED, position_encoding="rotary", **kw)


class TextSection(CorpusSection):
    headline = Metric("word_perplexity", "word-level perplexity", "perplexity", ".2f")

    def prepare_options(self, data_cfg: TextData) -> dict[str, Any]:
        opts: dict[str, Any] = {"tokenizer": data_cfg.tokenizer}
        if data_cfg.tokenizer == "sentencepiece":
            opts.update(vocab_size=data_cfg.vocab_size, seed=data_cfg.tokenizer_seed,
                        max_train_bytes=data_cfg.max_train_bytes)  # fmt: skip
        return opts

    def baselines(self, exp: Experiment, source, split: str, num: int | None = None) -> dict:
        u = unigram(source, split, exp.data.eval_examples if num is None else num)
        return {
            "unigram": {
                "value": u.get("word_perplexity", u["perplexity"]),
                "nats_per_token": u["nats_per_token"],
                "eval_tokens": u["eval_tokens"],
                "description": "token unigram of the training split (add-one), same targets and words",
            }
        }

    def sampling(self, exp: Experiment) -> SamplingSpec:
        return SamplingSpec(defaults={"temperature": 0.8, "top_p": 0.95})

    def prompts(self, exp: Experiment, source, num: int, prompt: str | None) -> Prompts:
        """``num`` prompts of ``data.prompt_tokens`` tokens from evenly spaced places in the
        evaluation split (or one ``--prompt`` text), each followed by ``data.sample_tokens`` true
        tokens for comparison."""
        P, K = exp.data.prompt_tokens, exp.data.sample_tokens
        P = min(P, exp.model.max_context)
        if prompt is not None:
            ids = np.asarray(source.tokenizer.encode(prompt), np.int32) + NUM_RESERVED
            if not len(ids):
                raise ValueError("the prompt encodes to no tokens")
            return Prompts([np.concatenate([[2], ids[-P:]]).astype(np.int32)], K, [None], ["--prompt"], source)
        docs = source.eval_documents(exp.data.eval_split, 0)
        # Evenly spaced (document, offset) places over the whole split.
        lengths = np.array([len(d.tokens) for d in docs])
        usable = np.maximum(lengths - P - K, 0)
        total = usable.sum()
        if total <= 0:
            raise ValueError(f"no evaluation document has {P + K} tokens for a prompt and its continuation")
        cum = np.cumsum(usable)
        tokens, expected, labels = [], [], []
        for j in range(num):
            at = int((j + 0.5) * total / num)
            i = int(np.searchsorted(cum, at, side="right"))
            off = at - (cum[i - 1] if i else 0)
            t = docs[i].tokens
            tokens.append(t[off : off + P])
            expected.append(t[off + P : off + P + K])
            labels.append(f"document {i}, token {off}")
        return Prompts(tokens, K, expected, labels, source)

    def decode(self, source, tokens: np.ndarray) -> str:
        t = np.asarray(tokens)
        return source.tokenizer.decode(t[t >= NUM_RESERVED] - NUM_RESERVED)

    def write_samples(self, exp: Experiment, prompts: Prompts, generated, outdir: Path, settings: dict) -> dict:
        from repro.runinfo import write_json_atomic, write_text_atomic

        source = prompts.source
        rows, lines = [], [f"{self.name} samples ({exp.preset}), settings {settings}\n"]
        for k, (p, g, e, lab) in enumerate(zip(prompts.tokens, generated, prompts.expected, prompts.labels,
                                               strict=True)):  # fmt: skip
            row = {"label": lab, "prompt": self.decode(source, p), "generated": self.decode(source, g),
                   "truth": None if e is None else self.decode(source, e)}  # fmt: skip
            rows.append(row)
            lines.append(f"\n===== [{k}] {lab}\n--- prompt (…{len(p)} tokens)\n{row['prompt'][-600:]}\n")
            lines.append(f"--- model ({len(g)} tokens)\n{row['generated']}\n")
            if row["truth"] is not None:
                lines.append(f"--- true continuation\n{row['truth']}\n")
        summary = {"section": self.name, "preset": exp.preset, "samples": len(rows), "settings": settings}
        write_json_atomic(outdir / "samples.json", {"summary": summary, "samples": rows})
        write_text_atomic(outdir / "samples.txt", "".join(lines))
        return summary
