"""Multi-SLERP: a weighted mean of several models on the hypersphere.

Chain: (task vectors if a base) → unit vectors → weighted Euclidean mean, normalised →
tangent-space offsets → weighted tangent mean → exponential map back → × weighted mean norm.

Each vector of the chain is a combination of the (task) vectors, built from their dot products
alone, so the method is three parts: their Gram matrix (blocks.Gram: 64K-block products summed
in float64), the chain on coefficients in float64 (`multislerp_coefficients`), and
base + Σ cᵢ·xᵢ in float32 (float64 stays), which any block of rows can apply. The whole-tensor
function is those three parts, so the streamed merge (streamed_vectors.py) gets its bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.errors import LosslessError
from lossless.methods.blocks import Gram, combination, gram_of
from lossless.methods.slerp import work_dtype

Coefficients = list[float] | None  # None: the one model as it is


def gram_vectors(tensors: list[torch.Tensor], base: torch.Tensor | None) -> list[torch.Tensor]:
    """The vectors whose dot products the method needs: the models, or their task vectors
    (model − base in the work dtype) when there is a base."""
    if base is None:
        return tensors
    work = work_dtype(base)
    origin = base.to(work)
    return [x.to(work) - origin for x in tensors]


def multislerp_coefficients(
    gram: Gram, weights: Sequence[float], normalize_weights: bool, eps: float
) -> Coefficients:
    """Coefficients over the (task) vectors of the merged (task) vector, in float64.
    A zero weighted mean of directions: the weighted lerp for two models, an error for more."""
    count = len(weights)
    if count == 1:
        return None
    g = gram.matrix()
    w = torch.tensor(weights, dtype=torch.float64)
    if normalize_weights:
        w = w / w.sum()
    norms = g.diagonal().clamp(min=0).sqrt()

    def length(c: torch.Tensor) -> float:
        return math.sqrt(max(float(c @ g @ c), 0.0))  # ≥ 0: rounding can make c·G·c < 0

    units = torch.diag(1 / (norms + eps))  # row i: the coefficients of xᵢ / (|xᵢ| + eps)
    mean = w @ units
    mean_norm = length(mean)
    if mean_norm < eps:
        if count != 2:
            raise LosslessError(
                "multislerp: the weighted mean of the models' directions is zero "
                "(antipodal models whose weights cancel)",
                hint="change the models' `weight` values",
            )
        return [float(c) for c in w]
    mean = mean / mean_norm

    tangents = units - (units @ g @ mean).unsqueeze(-1) * mean
    tangent = w @ tangents
    size = length(tangent) + eps
    on_sphere = mean * math.cos(size) + tangent * (math.sin(size) / size)
    return [float(c) for c in on_sphere * float((norms * w).sum())]


def coefficients(
    gram: Gram, model_params: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> Coefficients:
    weights = [float(p["weight"]) for p in model_params]
    normalize = bool(params.get("normalize_weights", True))
    return multislerp_coefficients(gram, weights, normalize, float(params.get("eps", 1e-8)))


def combine(
    coefficients: Coefficients, tensors: Sequence[torch.Tensor], base: torch.Tensor | None
) -> torch.Tensor:
    """base + Σ cᵢ·(xᵢ − base) in float32 (float64 stays), in the inputs' dtype: any block."""
    if coefficients is None:
        return tensors[0]
    dtype = tensors[0].dtype
    work = work_dtype(tensors[0])
    origin = None if base is None else base.to(work)
    merged = combination(coefficients, tensors, work, origin)
    return (merged if origin is None else merged.add_(origin)).to(dtype)  # type: ignore[no-any-return]


def multislerp(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One model → that model; two antipodal models → weighted lerp; more → an error."""
    tensors = list(tensors)
    gram = gram_of(gram_vectors, tensors, base) if len(tensors) > 1 else Gram(1)
    return combine(coefficients(gram, model_params, params), tensors, base)
