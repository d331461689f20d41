"""Readers of file formats several sections' raw layouts share (TFRecord, parquet, staging)."""
