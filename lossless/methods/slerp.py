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
# entries: an op on fewer than torch's grain (32768) runs on one thread, so its bits do not
# depend on the thread count
SERIAL = 1 << 14


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


def nuslerp_vectors(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, row_wise: bool, flatten: bool
) -> torch.Tensor:
    """Slerp per vector along the last dim (dim 0 if `row_wise`), or of the whole tensor.

    Computed in the inputs' dtype; colinear means 1 − cos²θ ≤ 1e-16. The angles of the whole
    tensor and of its columns (`row_wise`) come from float64 dot products summed in a fixed
    order (blocks.Gram, ColumnDots), so the streamed merge gets the same bits.
    """
    if flatten:
        gram = Gram(2)
        gram.add([v0.reshape(-1), v1.reshape(-1)])
        return nuslerp_flat_combine(t, nuslerp_flat_coefficients(t, gram), v0, v1)
    if row_wise:
        dots = ColumnDots()
        dots.add(v0, v1)
        return nuslerp_column_combine(t, nuslerp_column_sines(t, dots), v0, v1)
    shape = v0.shape
    cos = torch.sum(_unit_rows(v0) * _unit_rows(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= 1e-8**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    return torch.where(colinear, (1 - t) * v0 + t * v1, spherical).reshape(shape)


def _unit_rows(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=eps)


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


class ColumnDots:
    """Per column of two tensors (the vectors along dim 0, indexed by all other dims): a·a, b·b
    and a·b in float64. The rows are summed in fixed chunks (each under SERIAL entries, so one
    thread sums it: the bits do not depend on the thread count) and the chunk sums added in
    order. Rows come in order, in blocks of any size; rows that do not fill a chunk wait for the
    next block's, so the sums are the same whatever the blocks."""

    def __init__(self) -> None:
        self._total: torch.Tensor | None = None  # (3, columns): a·a, b·b, a·b
        self._shape: tuple[int, ...] = ()
        self._chunk = 1
        self._held: tuple[torch.Tensor, torch.Tensor] | None = None  # rows short of a chunk

    def add(self, v0: torch.Tensor, v1: torch.Tensor) -> None:
        a, b = _as_rows(v0), _as_rows(v1)
        if self._total is None:
            self._shape = tuple(v0.shape[1:])
            self._total = torch.zeros(3, a.shape[1], dtype=torch.float64)
            self._chunk = max(1, (SERIAL - 1) // max(1, a.shape[1]))
        start = 0
        if self._held is not None:
            start = self._chunk - self._held[0].shape[0]
            held = (torch.cat([self._held[0], a[:start]]), torch.cat([self._held[1], b[:start]]))
            self._held = None
            if held[0].shape[0] < self._chunk:
                self._held = held
                return
            self._sum(*held)
        full = start + (a.shape[0] - start) // self._chunk * self._chunk
        for lo in range(start, full, self._chunk):
            self._sum(a[lo : lo + self._chunk], b[lo : lo + self._chunk])
        if full < a.shape[0]:
            self._held = (a[full:].clone(), b[full:].clone())

    def _sum(self, a: torch.Tensor, b: torch.Tensor) -> None:
        assert self._total is not None
        a, b = (x.to(torch.float64, memory_format=torch.contiguous_format) for x in (a, b))
        self._total[0] += (a * a).sum(dim=0)
        self._total[1] += (b * b).sum(dim=0)
        self._total[2] += (a * b).sum(dim=0)

    def totals(self) -> tuple[tuple[int, ...], torch.Tensor]:
        """(the columns' shape, (3, columns) float64: a·a, b·b, a·b), every row added."""
        if self._held is not None:
            self._sum(*self._held)
            self._held = None
        if self._total is None:
            raise ValueError("no rows were added")
        return self._shape, self._total


def _as_rows(v: torch.Tensor) -> torch.Tensor:
    """(dim 0, every other dim flattened): the columns are the vectors."""
    rows = v.shape[0] if v.dim() else 1
    return v.reshape(rows, math.prod(v.shape[1:]))


# (sin((1−t)θ), sin(tθ), sin θ, colinear) per column, float64 (colinear a bool)
ColumnSines = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def nuslerp_column_sines(t: float, dots: ColumnDots) -> ColumnSines:
    """Each column's sines from its dot products (norms floored at 1e-7), SERIAL columns at a
    time: pieces fixed by the shape, not by torch's split over threads, so the bits stand even
    on a build whose acos or sin differ between a vectorised loop and its scalar tail."""
    shape, totals = dots.totals()
    parts = []
    for lo in range(0, max(1, totals.shape[1]), SERIAL):
        aa, bb, ab = totals[:, lo : lo + SERIAL]
        norms = aa.sqrt().clamp(min=1e-7) * bb.sqrt().clamp(min=1e-7)
        cos = (ab / norms).clamp(-1, 1)
        colinear = (1 - cos.square()) <= 1e-8**2
        theta = torch.acos(torch.where(colinear, 0.0, cos))
        parts.append((torch.sin((1 - t) * theta), torch.sin(t * theta), torch.sin(theta), colinear))
    s0, s1, st, colinear = (torch.cat(column).reshape(shape) for column in zip(*parts, strict=True))
    return s0, s1, st, colinear


def nuslerp_column_combine(
    t: float, sines: ColumnSines, v0: torch.Tensor, v1: torch.Tensor
) -> torch.Tensor:
    """Any row block of the per-column nuslerp, in the inputs' dtype (exact arithmetic only, so
    the bits do not depend on how torch splits the block)."""
    s0, s1, st = (s.to(v0.dtype) for s in sines[:3])
    spherical = (s0 * v0 + s1 * v1) / st
    return torch.where(sines[3], (1 - t) * v0 + t * v1, spherical)


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
