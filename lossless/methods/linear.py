"""Linear merge: a weighted average of the models' tensors (mergekit's `linear`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """sum(w_i · x_i), divided by sum(w_i) when `normalize` (the default)."""
    weights = torch.tensor([float(p["weight"]) for p in model_params], dtype=tensors[0].dtype)
    stacked = torch.stack(list(tensors), dim=0)
    weights = weights.view(-1, *([1] * (stacked.dim() - 1)))
    total = (stacked * weights).sum(dim=0)
    if params.get("normalize", True):
        total = total / weights.sum()
    return total
