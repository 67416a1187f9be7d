"""Shared helpers for the merge-method tests: call a method by its table name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.methods.table import METHODS


def merge(
    name: str,
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    model_params: Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Run METHODS[name] through the table, as the engine does."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    fn = METHODS[name].load()
    per_model = model_params if model_params is not None else [{} for _ in tensors]
    return fn(list(tensors), base, per_model, params or {}, generator=generator)


def t(*rows: Any) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)
