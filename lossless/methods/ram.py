"""RAM and RAM+ (arXiv 2601.13572): average task-vector entries only where models overlap.

An entry of a task vector "contributes" when |delta| > epsilon. Entries where one model
contributes are taken as they are (RAM+ multiplies them by 1 + r·clamp(ρ, 0, alpha), with ρ
= that model's shared/unique contribution counts); entries where several contribute are
averaged over the contributors; entries where none does stay at the base.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch


class Contributions(NamedTuple):
    deltas: torch.Tensor  # [models, entries], entries ≤ epsilon zeroed
    contributes: torch.Tensor  # bool [models, entries]
    counts: torch.Tensor  # int [1, entries]: how many models contribute
    shared: torch.Tensor  # bool [1, entries]: counts > 1
    unique: torch.Tensor  # bool [1, entries]: counts == 1


def contributions(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, epsilon: float
) -> Contributions:
    flat = torch.stack([x - base for x in tensors], dim=0).view(len(tensors), -1)
    contributes = flat.abs() > epsilon
    counts = contributes.sum(dim=0, keepdim=True)
    return Contributions(flat * contributes, contributes, counts, counts > 1, counts == 1)


def _merge(c: Contributions, unique_scale: torch.Tensor | None) -> torch.Tensor:
    unique = c.deltas * c.unique
    if unique_scale is not None:
        unique = unique * unique_scale.unsqueeze(-1)
    averaged = c.deltas * c.shared / c.counts.clamp(min=1)
    return (unique + averaged).sum(dim=0, keepdim=True)


def ram(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    if not tensors:
        return base
    c = contributions(tensors, base, epsilon_of(params))
    return base + _merge(c, None).reshape_as(base)


def overlap_counts(c: Contributions) -> tuple[torch.Tensor, torch.Tensor]:
    """Per model: how many of its contributing entries are shared, and how many unique
    (integers: a streamed merge adds them up block by block exactly)."""
    return (c.contributes & c.shared).sum(dim=1), (c.contributes & c.unique).sum(dim=1)


def overlap_boost(
    shared: torch.Tensor, unique: torch.Tensor, r: float, alpha: float, epsilon: float
) -> torch.Tensor:
    """Per model 1 + r·clamp(shared/unique, 0, alpha): r 0.1, alpha 0.2 → at most ×1.02."""
    rho = shared / unique.clamp(min=epsilon)
    return 1 + r * rho.clamp(min=0, max=alpha)


def boost_params(params: Mapping[str, Any]) -> tuple[float, float, float]:
    """(r, alpha, epsilon) of ramplus_tl."""
    return float(params.get("r", 0.1)), float(params.get("alpha", 0.2)), epsilon_of(params)


def epsilon_of(params: Mapping[str, Any]) -> float:
    return float(params.get("epsilon", 1e-5))


def merge_boosted(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, epsilon: float, boost: torch.Tensor
) -> torch.Tensor:
    """RAM with the unique entries scaled by `boost`: any block of the tensor."""
    c = contributions(tensors, base, epsilon)
    return base + _merge(c, boost).reshape_as(base)


def ramplus_tl(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RAM with each model's unique entries boosted by how much it overlaps with others.

    The boost is float32, so bf16 inputs give a float32 result (as in mergekit).
    """
    if not tensors:
        return base
    r, alpha, epsilon = boost_params(params)
    shared, unique = overlap_counts(contributions(tensors, base, epsilon))
    return merge_boosted(tensors, base, epsilon, overlap_boost(shared, unique, r, alpha, epsilon))
