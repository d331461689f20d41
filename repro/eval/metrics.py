"""Unit conversions for reported metrics, each with its standard error. Nats are the base unit.

Every metric comes from three sums over the *scored targets* of an evaluation:

    n  = number of scored targets         S1 = sum of their NLLs (nats)   S2 = sum of squared NLLs

Which targets are scored is decided exactly once, before these sums: PAD targets are never
scored (``token_losses`` in ``repro/train/step.py`` zeroes them, and protocols turn every target
they do not score into PAD, see ``repro/eval/protocols.py``); SOS is never a target (it is
only ever an input); EOS *is* a target of every sequence and is scored, except where a
section's documents exclude it (e.g. images, whose bits/dim count sub-pixels only). Nothing
below masks again.

Conversions (``m = S1 / n``, ``se(m) = sqrt((S2/n - m^2) / n)``, tokens treated as independent,
which understates the error of correlated tokens):

    nats/token        m                                    se(m)
    bits/token        m / ln 2                             se(m) / ln 2
    bits/dim          m / ln 2 with one token per sub-pixel (images: mean NLL per sub-pixel / ln 2)
    perplexity        exp(m)                               exp(m) * se(m)             (delta method)
    word perplexity   exp(S1 / W), W = words of the split  exp(S1/W) * (n / W) * se(m) (delta method)

Word-level perplexity is how PG-19 and WikiText-103 results are reported: the *total* NLL of the
split (all of its subword tokens, EOS included) divided by the number of words of the same split
in the dataset's own word counting (e.g. whitespace-separated words of WikiText-103 with one
``<eos>`` per line), not by the number of subword tokens. The standard error treats the
word count W as fixed: se(S1 / W) = n * se(m) / W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LN2 = math.log(2.0)


def nats_to_bits(nats: float) -> float:
    return nats / LN2


def mean_and_stderr(total: float, total_sq: float, n: float) -> tuple[float, float]:
    """Mean and standard error of the mean from a sum, a sum of squares and a count.

    Treats the n values as independent (a lower bound on the true error for correlated tokens).
    """
    if n <= 0:
        return float("nan"), float("nan")
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0)
    return mean, math.sqrt(var / n) if n > 1 else float("nan")


def safe_exp(x: float) -> float:
    """exp(x), or inf where it overflows (a diverged model's perplexity), never an exception."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def perplexity(mean_nll: float, stderr: float) -> tuple[float, float]:
    """exp(mean NLL in nats) and its delta-method standard error exp(m) * se(m) (inf on overflow)."""
    p = safe_exp(mean_nll)
    return p, (p * stderr if math.isfinite(p) else math.inf)


def word_perplexity(total_nll: float, num_words: float, n_tokens: float, token_stderr: float):
    """exp(total NLL / words) and its delta-method standard error (see the module docstring)."""
    if num_words <= 0:
        return float("nan"), float("nan")
    per_word = total_nll / num_words
    se_per_word = token_stderr * n_tokens / num_words
    return perplexity(per_word, se_per_word)


@dataclass
class NLLSums:
    """Running sums of per-target NLLs (nats) over scored targets; see the module docstring."""

    n: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, nll: np.ndarray, weight: np.ndarray) -> None:
        """Add NLLs with 0/1 weights (weight 0 = not scored; its NLL is ignored)."""
        nll, w = np.asarray(nll, np.float64), np.asarray(weight, np.float64)
        self.n += float(w.sum())
        self.total += float((nll * w).sum())
        self.total_sq += float((np.square(nll) * w).sum())

    def summary(self, *, num_words: float | None = None, bits_per_dim: bool = False) -> dict[str, float]:
        """All metrics with their standard errors (``<name>_stderr``); keys are the units."""
        m, se = mean_and_stderr(self.total, self.total_sq, self.n)
        ppl, ppl_se = perplexity(m, se) if self.n else (float("nan"), float("nan"))
        out = {
            "nats_per_token": m,
            "nats_per_token_stderr": se,
            "bits_per_token": nats_to_bits(m),
            "bits_per_token_stderr": nats_to_bits(se),
            "perplexity": ppl,
            "perplexity_stderr": ppl_se,
            "eval_tokens": self.n,
            "total_nll_nats": self.total,
        }
        if bits_per_dim:
            out["bits_per_dim"], out["bits_per_dim_stderr"] = nats_to_bits(m), nats_to_bits(se)
        if num_words is not None:
            wp, wp_se = word_perplexity(self.total, num_words, self.n, se)
            out.update(word_perplexity=wp, word_perplexity_stderr=wp_se, eval_words=float(num_words))
        return out
