"""One module per step kind: train, apply, merge, eval. The runner calls them; they know no caching."""
