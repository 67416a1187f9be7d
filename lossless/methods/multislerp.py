"""Multi-SLERP: a weighted mean of several models on the hypersphere.

Chain: (task vectors if a base) → unit vectors → weighted Euclidean mean, normalised →
tangent-space offsets → weighted tangent mean → exponential map back → × weighted mean norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.errors import LosslessError


def multislerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One model → that model; two antipodal models → weighted lerp; more → an error."""
    if len(tensors) == 1:
        return tensors[0]
    eps = float(params.get("eps", 1e-8))
    stacked = torch.stack(list(tensors), dim=0)
    if base is not None:
        stacked = stacked - base
    flat = stacked.view(stacked.shape[0], -1)
    weights = torch.tensor(
        [float(p["weight"]) for p in model_params], dtype=stacked.dtype, device=stacked.device
    )
    if params.get("normalize_weights", True):
        weights = weights / weights.sum()

    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if stacked.shape[0] != 2:
            raise LosslessError(
                "multislerp: the weighted mean of the models' directions is zero "
                "(antipodal models whose weights cancel)",
                hint="change the models' `weight` values",
            )
        result = (stacked[0] * weights[0] + stacked[1] * weights[1]).view(stacked.shape[1:])
        return result + base if base is not None else result
    mean = mean / mean_norm

    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    tangent = (tangents * weights.view(-1, 1)).sum(0)
    length = torch.norm(tangent) + eps
    on_sphere = mean * torch.cos(length) + tangent * (torch.sin(length) / length)
    result = (on_sphere * (norms.squeeze(-1) * weights).sum()).view(stacked.shape[1:])
    return result + base if base is not None else result
