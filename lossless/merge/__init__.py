"""Merging: a pure-data tensor plan, then a streaming executor that computes and writes it."""
