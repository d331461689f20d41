"""Sampling: cached autoregressive generation and token choice."""
