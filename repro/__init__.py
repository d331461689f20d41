"""repro: a reproduction suite for Perceiver AR (Hawthorne et al., ICML 2022)."""

from repro.allocator import tune_allocator

__version__ = "0.1.0"

# Before JAX starts its threads: see repro/allocator.py (per-step page faults on CPU).
tune_allocator()
