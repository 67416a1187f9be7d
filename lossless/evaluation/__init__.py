"""Measuring forgetting: held-out metrics, gates and reports used by the `eval:` step."""
