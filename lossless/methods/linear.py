"""Linear merge: a weighted average of the models' tensors (mergekit's `linear`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32 for anything but float64: bf16 sums of many models would lose precision."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Σ wᵢ·xᵢ (÷ Σ wᵢ when `normalize`, the default), accumulated in float32.

    mergekit ignores the base for `linear`: a `base_model` it names is one more input with its
    own `weight`, so callers pass it inside `tensors`. Weights summing to 0 with `normalize`
    give inf/nan, as in mergekit.
    """
    first = tensors[0]
    if not first.is_floating_point():
        raise TypeError("linear merging needs floating-point tensors")
    dtype = compute_dtype(first)
    weights = torch.tensor([float(p["weight"]) for p in model_params], dtype=dtype)
    total = torch.zeros_like(first, dtype=dtype)
    for tensor, weight in zip(tensors, weights, strict=True):
        total.addcmul_(tensor, weight.to(first.device))
    if params.get("normalize", True):
        total.div_(weights.sum().to(first.device))
    return total.to(first.dtype)
