"""repro: a reproduction suite for Perceiver AR (Hawthorne et al., ICML 2022)."""

__version__ = "0.1.0"
