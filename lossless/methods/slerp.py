"""Spherical interpolation: `slerp` (base ↔ one model) and `nuslerp` (two models, weights).

Both fall back to linear interpolation when the two vectors are (nearly) colinear, where the
spherical formula divides by sin θ ≈ 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

DOT_THRESHOLD = 0.9995  # |cos θ| above this → lerp (θ < ~1.8°)
NORM_EPS = 1e-8  # a vector with a smaller norm is not normalised (treated as norm 1)


def slerp_vectors(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """The whole tensor as one vector; float32 maths (float64 stays), result in v0's dtype."""
    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a = v0.reshape(-1).to(dtype)
    b = v1.reshape(-1).to(dtype)
    tt = torch.tensor(t, dtype=dtype)
    if a.numel() == 0:
        return ((1 - tt) * a + tt * b).reshape(v0.shape).to(v0.dtype)
    norm_a = torch.linalg.vector_norm(a)
    norm_b = torch.linalg.vector_norm(b)
    norm_a = torch.where(norm_a > NORM_EPS, norm_a, 1)
    norm_b = torch.where(norm_b > NORM_EPS, norm_b, 1)
    cos = ((a / norm_a) * (b / norm_b)).sum().clamp(-1, 1)
    colinear = cos.abs() > DOT_THRESHOLD
    theta = torch.acos(torch.where(colinear, 0, cos))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(colinear, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(colinear, tt, torch.sin(tt * theta) / sin_theta)
    return (coef_a * a + coef_b * b).to(v0.dtype).reshape(v0.shape)


def slerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """t=0 → the base, t=1 → the other model; t outside [0, 1] extrapolates, as in mergekit."""
    (other,) = tensors
    if not base.is_floating_point():
        raise TypeError("slerp needs floating-point tensors")
    return slerp_vectors(float(params["t"]), base, other)


def _unit_rows(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=eps)


def nuslerp_vectors(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, row_wise: bool, flatten: bool
) -> torch.Tensor:
    """Slerp per vector along the last dim (dim 0 if `row_wise`), or of the whole tensor.

    Computed in the inputs' dtype; colinear means 1 − cos²θ ≤ 1e-16.
    """
    shape = v0.shape
    swap = row_wise and not flatten
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif swap:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    cos = torch.sum(_unit_rows(v0) * _unit_rows(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= 1e-8**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    result = torch.where(colinear, (1 - t) * v0 + t * v1, spherical)
    if swap:
        result = result.transpose(0, -1)
    return result.reshape(shape)


def nuslerp_t(weights: Sequence[float]) -> float:
    """Interpolation point from two weights: w₂ / (w₁ + w₂), or 0.5 if they sum to ~0."""
    total = sum(weights)
    return 0.5 if abs(total) < 1e-6 else weights[1] / total


def nuslerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Slerp of two models (or of their task vectors, when there is a base)."""
    first, second = tensors
    t = nuslerp_t([float(p["weight"]) for p in model_params])
    row_wise = bool(params.get("nuslerp_row_wise", False))
    flatten = bool(params.get("nuslerp_flatten", True))
    if base is None:
        return nuslerp_vectors(t, first, second, row_wise=row_wise, flatten=flatten)
    delta = nuslerp_vectors(t, first - base, second - base, row_wise=row_wise, flatten=flatten)
    return base + delta
