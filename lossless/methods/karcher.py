"""Karcher (Riemannian) mean of the models' directions, scaled by their mean norm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def _norm(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.linalg.vector_norm(x.to(dtype))


def karcher_mean(
    tensors: Sequence[torch.Tensor], alphas: Sequence[float], max_iter: int, tol: float
) -> torch.Tensor:
    """Fixed-point iteration on the unit sphere; stops when the tangent step's norm < tol.

    Inputs with norm ≤ tol take no part in the direction but still count in the scale
    Σ αᵢ·|xᵢ| (so a zero model shrinks the result, as in mergekit).
    """
    if len(tensors) == 1:
        return tensors[0]
    dtype = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    norms = [_norm(x, dtype) for x in tensors]
    units = [
        torch.zeros_like(x) if n.item() == 0.0 else (x / n).to(x.dtype)
        for x, n in zip(tensors, norms, strict=True)
    ]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return sum(x * 0 for x in tensors)  # type: ignore[return-value]
    alpha_total = sum(alphas[i] for i in valid)
    weights = [alphas[i] / alpha_total for i in valid]
    points = [units[i] for i in valid]

    mean = torch.zeros_like(points[0])
    for weight, point in zip(weights, points, strict=True):
        mean += weight * point
    mean_norm = _norm(mean, dtype)
    mean = points[0].clone() if mean_norm.item() < tol else (mean / mean_norm).to(mean.dtype)

    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for weight, point in zip(weights, points, strict=True):
            cos = torch.clamp(torch.dot(mean.flatten(), point.flatten()), -1.0, 1.0)
            theta = torch.arccos(cos)
            if theta.item() < tol:
                continue
            tangent += weight * (theta / torch.sin(theta)) * (point - cos * mean)
        step = _norm(tangent, dtype)
        if step.item() < tol:
            break
        mean = (torch.cos(step) * mean + torch.sin(step) * (tangent / step)).to(mean.dtype)
        length = _norm(mean, dtype)
        if length.item() > tol:
            mean = (mean / length).to(mean.dtype)

    scale = sum(alpha * n for alpha, n in zip(alphas, norms, strict=True))
    return scale * mean  # type: ignore[no-any-return]


def karcher(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Equal weights 1/n over every input (mergekit 0.1.5 has no per-model weight here)."""
    alphas = [1.0 / len(tensors)] * len(tensors)
    max_iter = int(params.get("max_iter", 10))
    return karcher_mean(tensors, alphas, max_iter, float(params.get("tol", 1e-5)))
