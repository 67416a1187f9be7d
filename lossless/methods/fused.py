"""Fused CPU kernels for the elementwise merge math: linear and the task-arithmetic chain at
density 1 or after the TIES cut (sign election included), one pass over the entries instead of ~25 torch ops.

Why by hand: torch's eager ops run one pass each over 64K-entry blocks, so the math of a TIES
merge costs more than reading and writing its bytes; torch.compile needs a C++ compiler at
run time and does not round half floats between ops as eager torch does, so its bits differ.
numba compiles these loops (methods/fused_kernels.py) once per signature, cached on disk, and
they release the GIL, so the executor's workers run them on every core: 6× faster than the
chain's torch ops on a 17M-entry bf16 TIES tensor, 6× for linear.

Every kernel computes exactly what the torch chain computes, bit for bit: each bf16 op of the
chain is a float32 op rounded to bf16 to nearest even, as torch's CPU kernels do, in the same
order (tests/methods/test_fused.py compares the bits on random, tied, signed-zero and
subnormal entries). A block whose result is not finite (a non-finite input always reaches
it) is left to the torch chain, whose NaN bits (which differ between its vector and scalar
loops) are not imitated here. Where numba cannot be imported, or for what the kernels do not
cover (float16, float64, a GPU, inputs of mixed dtypes, a sparsifier other than the TIES cut),
the callers run torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lossless.methods import blocks, direct
from lossless.methods.sparsify import KEEP_ALL, Kept
from lossless.methods.top_cut import KINDS as _KINDS
from lossless.methods.top_cut import TopCut
from lossless.methods.top_cut import as_bits as _bits

ENABLED = blocks.KERNELS  # tests switch the torch chain on here


def available(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can run on these tensors: numba present, CPU, contiguous, bf16 or
    float32."""
    return ENABLED and all(
        t.device.type == "cpu" and t.dtype in _KINDS and t.is_contiguous() for t in tensors
    )


def linear_into(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    divisor: float | None,
    dtype: torch.dtype,
    out: torch.Tensor,
) -> bool:
    """linear's block loop (methods/linear.py) into `out`: Σ wᵢ·xᵢ in float32, ÷ divisor,
    rounded to `dtype` then to out's dtype. False (nothing promised in `out`) when the kernels
    do not cover these dtypes, or an entry is not finite: the caller then runs torch."""
    if not (available(out, *tensors) and dtype in _KINDS and _one_dtype(tensors)):
        return False
    from lossless.methods import fused_kernels

    return bool(
        fused_kernels.linear(
            tuple(_bits(t) for t in tensors),
            tuple(np.float32(w) for w in weights),  # values: no loads per entry
            np.float32(1.0 if divisor is None else divisor),
            _like(dtype),
            _bits(out),
        )
    )


def _covers_delta(tensor: torch.Tensor, base: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the kernels make `tensor − base` in `dtype` (the task vector's magnitudes)."""
    return available(tensor, base) and dtype in _KINDS and tensor.numel() == base.numel()


def magnitudes(tensor: torch.Tensor, base: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """|tensor − base| in `dtype`, flat, in float32 (ranking_magnitudes of task_vector's
    entries, the same bits) in one pass; None where the kernels do not cover these tensors
    (the caller runs torch)."""
    if not _covers_delta(tensor, base, dtype):
        return None
    from lossless.methods import fused_kernels

    out = torch.empty(tensor.numel(), dtype=torch.float32)
    fused_kernels.magnitudes(_bits(tensor), _bits(base), _like(dtype), out.numpy())
    return out


def add_magnitude_histogram(
    tensor: torch.Tensor, base: torch.Tensor, dtype: torch.dtype, high: torch.Tensor
) -> bool | None:
    """Count the high 16 bits of `magnitudes(tensor, base, dtype)` into `high` (65,536 int64),
    in one pass that makes no keys; whether some key has low bits. None, with nothing counted,
    where the kernels do not cover these tensors."""
    if not _covers_delta(tensor, base, dtype):
        return None
    from lossless.methods import fused_kernels

    return bool(
        fused_kernels.magnitude_histogram(_bits(tensor), _bits(base), _like(dtype), high.numpy())
    )


def combine_into(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    kept: Sequence[Kept],
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    elect_sign: bool,
    normalize: bool,
    dtype: torch.dtype,
    out: torch.Tensor,
    start: int = 0,
) -> bool:
    """task_arithmetic.combine into `out` (the block at flat entry `start` of the tensor), for
    models whose entries are all kept or trimmed by a TIES cut; False when the kernels do not
    cover it (the caller runs torch): another sparsifier (random, outliers, rescaled), a dtype
    other than bf16 or float32, more than 4 float32 rows (torch splits those sums its own way),
    or a non-finite result."""
    if not (available(out, base, *tensors) and dtype in _KINDS and _one_dtype(tensors)):
        return False
    cuts = [_cut(k, dtype) for k in kept]
    if (dtype == torch.float32 and len(tensors) > direct.MAX_SUMMED) or any(
        c is None for c in cuts
    ):
        return False
    weights = torch.tensor([float(p["weight"]) for p in model_params], dtype=dtype)
    scale = float(params.get("lambda", 1.0))
    from lossless.methods import fused_kernels

    combine, fix_ties = fused_kernels.combine_kernel(elect_sign, normalize, scale != 1)
    args = (
        tuple(_bits(t) for t in tensors),
        _bits(base),
        tuple(np.float32(w) for w in weights.float().tolist()),  # values: no loads per entry
        tuple(np.float32(c) for c in cuts),
        np.float32(scale),
        _like(dtype),
        _bits(out),
    )
    if not combine(*args):
        return False
    tied = tuple(_kept_ties(k, start, out.numel()) for k in kept)
    return not any(t.size for t in tied) or bool(fix_ties(*args, tied, start))


def _cut(kept: Kept, dtype: torch.dtype) -> float | None:
    """The magnitude a model's entries must exceed to be kept (-1: all are), or None where the
    kernels cannot apply its sparsifier."""
    if kept is KEEP_ALL:
        return -1.0
    cut = kept.select
    plain = not kept.zero and kept.factor is None and kept.work in (None, dtype)
    if plain and isinstance(cut, TopCut) and cut.trims:
        return cut.threshold  # a float32 magnitude (or a bf16 one): exact in float32
    return None


def _kept_ties(kept: Kept, start: int, count: int) -> np.ndarray:
    """The entries tied at a model's cut that it keeps, in the block [start, start + count):
    a view of the cut's sorted flat indices (empty for a model that keeps every entry)."""
    if not isinstance(kept.select, TopCut):
        return _NO_TIES
    lo, hi = np.searchsorted(kept.select.tied, [start, start + count])
    return kept.select.tied[lo:hi]


_NO_TIES = np.empty(0, dtype=np.int64)


def _one_dtype(tensors: Sequence[torch.Tensor]) -> bool:
    """Inputs of one stored dtype, and not too many (numba indexes a tuple of one type)."""
    return 0 < len(tensors) <= direct.MAX_MODELS and len({t.dtype for t in tensors}) == 1


def _like(dtype: torch.dtype) -> np.ndarray:
    """An empty array whose integer type names the compute dtype to the kernels."""
    return np.empty(0, dtype=direct.COMPUTED[str(dtype).removeprefix("torch.")])
