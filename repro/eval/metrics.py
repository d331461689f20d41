"""Unit conversions for reported metrics (nats are the base unit everywhere)."""

from __future__ import annotations

import math

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
