"""Merge methods: pure tensor functions, one file per family, listed in `table.METHODS`."""
