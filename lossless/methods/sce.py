"""SCE (arXiv 2408.07990): Select high-variance entries, Calculate weights, Erase minority signs.

Chain: task vectors → keep the `select_topk` fraction of entries (of those whose variance
across models is non-zero) with the largest variance → per-model weight = mean square of its
task vector, normalised to sum 1 → TIES sign election → weighted disjoint mean.
No per-model `weight`: the weights come from the task vectors themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.methods.task_arithmetic import elect_sign_mask


def select_high_variance(
    deltas: torch.Tensor, fraction: float, mask_dtype: torch.dtype
) -> torch.Tensor:
    """Mask over one tensor's entries: top `int(nonzero_variance · fraction)` by variance."""
    if fraction <= 0:
        return torch.zeros_like(deltas[0], dtype=mask_dtype)
    if fraction >= 1:
        return torch.ones_like(deltas[0], dtype=mask_dtype)
    variance = torch.var(deltas, dim=0, unbiased=False)
    keep = int(torch.count_nonzero(variance) * fraction)
    mask = torch.zeros_like(variance, dtype=mask_dtype)
    if keep == 0:
        return mask
    _, chosen = torch.topk(variance.abs().view(-1), k=keep, largest=True)
    mask.view(-1)[chosen] = 1
    return mask


def energy_weights(deltas: torch.Tensor) -> torch.Tensor:
    """Mean of squares per model, normalised to sum 1 (uniform if all are ~0)."""
    energy = deltas.square().reshape(deltas.shape[0], -1).mean(dim=1)
    total = torch.sum(energy).item()
    if abs(total) < 1e-6:
        return torch.ones_like(energy) / energy.shape[0]
    return energy / total


def sce(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    if not tensors:
        return base
    mask_dtype = torch.int8 if params.get("int8_mask", False) else base.dtype
    deltas = torch.stack([x - base for x in tensors], dim=0)
    fraction = float(params.get("select_topk", 1.0))
    if fraction < 1:
        deltas = deltas * select_high_variance(deltas, fraction, mask_dtype).unsqueeze(0)
    agree = elect_sign_mask(deltas)
    weights = energy_weights(deltas)
    weights = weights.view(-1, *([1] * (deltas.dim() - 1)))
    kept = weights * agree
    merged = (deltas * kept).sum(dim=0) / torch.sum(kept, dim=0).clamp(min=1e-6)
    return base + merged
