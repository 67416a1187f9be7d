"""Model Stock (arXiv 2403.19522): move the fine-tunes' average towards the base by their angle.

With k fine-tunes whose task vectors have mean pairwise cosine c, the result is
t·average + (1 − t)·base with t = k·c / (1 + (k − 1)·c). Identical fine-tunes (c = 1) give
t = 1: the average itself; orthogonal ones (c = 0) give the base.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.methods.blocks import Gram


def mean_pairwise_cosine(offsets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean cosine over all pairs, along the last dim, with a trailing axis to broadcast."""
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    return torch.stack(cosines).mean(dim=0).unsqueeze(-1)


def interpolation_ratio(cos: torch.Tensor, count: int) -> torch.Tensor:
    """k·c / (1 + (k−1)·c); 0 (keep the base) where the denominator is ~0 (c = −1/(k−1))."""
    denominator = 1 + (count - 1) * cos
    singular = denominator.abs() < 1e-6
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    return torch.where(singular, torch.zeros_like(cos), (count * cos) / safe)


def ratio_from_gram(gram: Gram, count: int) -> float:
    """The interpolation ratio of the whole task vectors, from their dot products (float64):
    the mean pairwise cosine (norm products floored at 1e-6), then interpolation_ratio."""
    cosines = []
    for i in range(count):
        for j in range(i + 1, count):
            norms = math.sqrt(gram.value(i, i)) * math.sqrt(gram.value(j, j))
            cosines.append(min(1.0, max(-1.0, gram.value(i, j) / max(norms, 1e-6))))
    cos = sum(cosines) / len(cosines)
    denominator = 1 + (count - 1) * cos
    return 0.0 if abs(denominator) < 1e-6 else count * cos / denominator


def stock_combine(
    ratio: float | torch.Tensor, tensors: Sequence[torch.Tensor], base: torch.Tensor
) -> torch.Tensor:
    """ratio·average + (1 − ratio)·base, entry by entry: any block of the tensor."""
    if not isinstance(ratio, torch.Tensor):
        ratio = torch.tensor(ratio, dtype=base.dtype, device=base.device)
    average = sum(tensors) / len(tensors)
    return ratio * average + (1 - ratio) * base


def model_stock(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Whole tensor as one vector (its cosines from dot products summed block by block in
    float64, blocks.Gram, as the streamed merge sums them), or one ratio per row with
    `filter_wise` (1-D: one row)."""
    if params.get("filter_wise", False):
        w0 = base.unsqueeze(0) if base.dim() == 1 else base
        ws = [w.unsqueeze(0) for w in tensors] if base.dim() == 1 else list(tensors)
        ratio = interpolation_ratio(mean_pairwise_cosine([w - w0 for w in ws]), len(ws))
        return stock_combine(ratio, ws, w0).reshape(base.shape)
    gram = Gram(len(tensors))
    gram.add([(w - base).reshape(-1) for w in tensors])
    return stock_combine(ratio_from_gram(gram, len(tensors)), tensors, base)
