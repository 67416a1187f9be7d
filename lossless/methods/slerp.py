"""Spherical interpolation: `slerp` (base ↔ one model) and `nuslerp` (two models, weights).

Both fall back to linear interpolation when the two vectors are (nearly) colinear, where the
spherical formula divides by sin θ ≈ 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.methods.blocks import Gram

DOT_THRESHOLD = 0.9995  # |cos θ| above this → lerp (θ < ~1.8°)
NORM_EPS = 1e-8  # a vector with a smaller norm is not normalised (treated as norm 1)


def work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """slerp's arithmetic: float32 (float64 stays)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def slerp_coefficients(t: float, gram: Gram) -> tuple[float, float]:
    """(coefficient of v0, of v1) from the vectors' dot products (float64)."""
    norms = [math.sqrt(gram.value(i, i)) for i in (0, 1)]
    norm_a, norm_b = (n if n > NORM_EPS else 1.0 for n in norms)
    cos = min(1.0, max(-1.0, gram.value(0, 1) / (norm_a * norm_b)))
    if abs(cos) > DOT_THRESHOLD:
        return 1 - t, t
    theta = math.acos(cos)
    return math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)


def slerp_combine(
    coefficients: tuple[float, float], v0: torch.Tensor, v1: torch.Tensor
) -> torch.Tensor:
    """coef_a·v0 + coef_b·v1 in the work dtype, rounded to v0's dtype: any block of the tensor."""
    dtype = work_dtype(v0)
    coef_a, coef_b = (torch.tensor(c, dtype=dtype) for c in coefficients)
    return (coef_a * v0.to(dtype) + coef_b * v1.to(dtype)).to(v0.dtype)


def slerp_vectors(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """The whole tensor as one vector; float32 maths (float64 stays), result in v0's dtype.
    The angle comes from dot products summed block by block in float64 (blocks.Gram), so the
    streamed merge (streamed_vectors.py) gets the same bits."""
    if v0.numel() == 0:
        return v0.clone()
    gram = Gram(2)
    dtype = work_dtype(v0)
    gram.add([v0.reshape(-1).to(dtype), v1.reshape(-1).to(dtype)])
    return slerp_combine(slerp_coefficients(t, gram), v0, v1)


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
        gram = Gram(2)
        gram.add([v0.reshape(-1), v1.reshape(-1)])
        return nuslerp_flat_combine(t, nuslerp_flat_coefficients(t, gram), v0, v1)
    if swap:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    cos = torch.sum(_unit_rows(v0) * _unit_rows(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= 1e-8**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    result = torch.where(colinear, (1 - t) * v0 + t * v1, spherical)
    if swap:
        result = result.transpose(0, -1)
    return result.reshape(shape)


def nuslerp_flat_coefficients(t: float, gram: Gram) -> tuple[float, float, float] | None:
    """(sin((1−t)θ), sin(tθ), sin θ) of the whole tensors as vectors, from their dot products
    (float64, norms floored at 1e-7); None when colinear (1 − cos²θ ≤ 1e-16): lerp."""
    norms = [max(math.sqrt(gram.value(i, i)), 1e-7) for i in (0, 1)]
    cos = min(1.0, max(-1.0, gram.value(0, 1) / (norms[0] * norms[1])))
    if 1 - cos * cos <= 1e-8**2:
        return None
    theta = math.acos(cos)
    return math.sin((1 - t) * theta), math.sin(t * theta), math.sin(theta)


def nuslerp_flat_combine(
    t: float, sines: tuple[float, float, float] | None, v0: torch.Tensor, v1: torch.Tensor
) -> torch.Tensor:
    """Any block of the flattened nuslerp, in the inputs' dtype."""
    if sines is None:
        return (1 - t) * v0 + t * v1
    s0, s1, st = (torch.tensor(s, dtype=v0.dtype, device=v0.device) for s in sines)
    return (s0 * v0 + s1 * v1) / st


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
