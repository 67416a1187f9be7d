"""Arcee Fusion: take the other model's change only where it is unusually important.

importance = |other − base| × KL(softmax(other) ‖ softmax(base)) per row (last dim); the
change is kept where importance ≥ median + 1.5·IQR of all importances (an outlier fence),
else the base value stays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

QUANTILE_SAMPLE = 1_000_000  # more entries than this: quantiles of a random sample


def importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    eps = 1e-8
    p = torch.softmax(other, dim=-1) + eps
    q = torch.softmax(base, dim=-1) + eps
    kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    return (other - base).abs() * kl


def approximate_quantiles(
    values: torch.Tensor, q: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Entries at floor(q·(n−1)) of the sorted values (a sample with replacement if large)."""
    flat = values.reshape(-1)
    if flat.numel() > QUANTILE_SAMPLE:
        picks = torch.randint(
            flat.numel(), (QUANTILE_SAMPLE,), device=flat.device, generator=generator
        )
        flat = flat[picks]
    ordered, _ = torch.sort(flat)
    return ordered[(q.to(ordered.device) * (ordered.numel() - 1)).long()]


def fusion_mask(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """1.0 where the score reaches median + 1.5·(q3 − q1), in float32."""
    q1, median, q3 = approximate_quantiles(scores, torch.tensor([0.25, 0.5, 0.75]), generator)
    return (scores >= median + 1.5 * (q3 - q1)).float()


def arcee_fusion(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic below 1M entries; above, the quantile sample uses `generator`.

    The mask is float32, so bf16/fp16 inputs give a float32 result (as in mergekit); the
    engine casts to the output dtype.
    """
    (other,) = tensors
    mask = fusion_mask(importance(other, base), generator)
    return base + (other - base) * mask
