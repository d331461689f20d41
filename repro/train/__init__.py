"""Optimiser, the jitted train step, and the training loop."""
