"""Datasets, tokenisation constants and training-window construction."""
