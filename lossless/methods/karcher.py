"""Karcher (Riemannian) mean of the models' directions, scaled by their mean norm.

Every vector the iteration builds (units, the mean, tangents, the exponential map) is a
combination of the inputs, and it only ever asks for their dot products. So the method is
three parts: the inputs' Gram matrix (blocks.Gram: 64K-block products summed in float64), the
iteration on coefficients over the inputs in float64 (`karcher_coefficients`), and the
combination Σ cᵢ·xᵢ in float32 (float64 stays), which any block of rows can apply. The
whole-tensor function is those three parts, so the streamed merge (streamed_vectors.py) gets
its bits whatever the block size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.methods.blocks import Gram, combination, gram_of
from lossless.methods.slerp import work_dtype

Coefficients = list[float] | None  # None: the one input as it is


def gram_vectors(tensors: list[torch.Tensor], base: torch.Tensor | None) -> list[torch.Tensor]:
    """The vectors whose dot products the method needs: the inputs themselves (no base)."""
    return tensors


def karcher_coefficients(
    gram: Gram, alphas: Sequence[float], max_iter: int, tol: float
) -> Coefficients:
    """Fixed-point iteration on the unit sphere; stops when the tangent step's norm < tol.

    Inputs with norm ≤ tol take no part in the direction but still count in the scale
    Σ αᵢ·|xᵢ| (so a zero model shrinks the result, as in mergekit); none above tol → zeros.
    """
    count = len(alphas)
    if count == 1:
        return None
    g = gram.matrix()
    norms = [math.sqrt(max(gram.value(i, i), 0.0)) for i in range(count)]

    def length(c: torch.Tensor) -> float:
        return math.sqrt(max(float(c @ g @ c), 0.0))  # ≥ 0: rounding can make c·G·c < 0

    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return [0.0] * count
    alpha_total = sum(alphas[i] for i in valid)
    weights = [alphas[i] / alpha_total for i in valid]
    eye = torch.eye(count, dtype=torch.float64)
    points = [eye[i] / norms[i] for i in valid]  # unit directions, as coefficients

    mean = torch.zeros(count, dtype=torch.float64)
    for weight, point in zip(weights, points, strict=True):
        mean += weight * point
    mean_norm = length(mean)
    mean = points[0].clone() if mean_norm < tol else mean / mean_norm

    for _ in range(max_iter):
        tangent = torch.zeros(count, dtype=torch.float64)
        for weight, point in zip(weights, points, strict=True):
            cos = min(1.0, max(-1.0, float(mean @ g @ point)))
            theta = math.acos(cos)
            if theta < tol:
                continue
            tangent += weight * (theta / math.sin(theta)) * (point - cos * mean)
        step = length(tangent)
        if step < tol:
            break
        mean = math.cos(step) * mean + math.sin(step) * (tangent / step)
        mean_length = length(mean)
        if mean_length > tol:
            mean = mean / mean_length

    scale = sum(alpha * n for alpha, n in zip(alphas, norms, strict=True))
    return [float(c) for c in scale * mean]


def coefficients(
    gram: Gram, model_params: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> Coefficients:
    """Equal weights 1/n over every input (mergekit 0.1.5 has no per-model weight here)."""
    alphas = [1.0 / len(model_params)] * len(model_params)
    max_iter, tol = int(params.get("max_iter", 10)), float(params.get("tol", 1e-5))
    return karcher_coefficients(gram, alphas, max_iter, tol)


def combine(
    coefficients: Coefficients, tensors: Sequence[torch.Tensor], base: torch.Tensor | None
) -> torch.Tensor:
    """Σ cᵢ·xᵢ in float32 (float64 stays), in the inputs' dtype: any block of the tensors."""
    if coefficients is None:
        return tensors[0]
    dtype = tensors[0].dtype
    return combination(coefficients, tensors, work_dtype(tensors[0])).to(dtype)  # type: ignore[no-any-return]


def karcher(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The whole tensors: their Gram matrix, the iteration, the combination."""
    tensors = list(tensors)
    gram = gram_of(gram_vectors, tensors, None) if len(tensors) > 1 else Gram(1)
    return combine(coefficients(gram, model_params, params), tensors, None)
