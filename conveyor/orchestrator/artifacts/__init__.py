"""Artifacts as data: their model, key rules, checksums and retention."""
