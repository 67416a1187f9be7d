"""Linear merge: a weighted average of the models' tensors (mergekit's `linear`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lossless.methods import blocks, fused


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32 for anything but float64: bf16 sums of many models would lose precision."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Σ wᵢ·xᵢ (÷ Σ wᵢ when `normalize`, the default), accumulated in float32.

    mergekit ignores the base for `linear`: a `base_model` it names is one more input with its
    own `weight`, so callers pass it inside `tensors`. Weights summing to 0 with `normalize`
    give inf/nan, as in mergekit.

    Inputs may come in their stored dtype: each block is cast to `dtype` (default: the first
    input's) as the engine would have cast the whole tensor, and the result is `dtype` rounded
    to `out_dtype` (default `dtype`), with no whole-tensor float32 copy of any input.
    """
    first = tensors[0]
    if not first.is_floating_point():
        raise TypeError("linear merging needs floating-point tensors")
    dtype = dtype or first.dtype
    accumulate = torch.float64 if dtype == torch.float64 else torch.float32
    weights = torch.tensor([float(p["weight"]) for p in model_params], dtype=accumulate)
    weights = weights.to(first.device)
    divisor = weights.sum() if params.get("normalize", True) else None
    out = torch.empty(first.shape, dtype=out_dtype or dtype, device=first.device)
    if fused.linear_into(
        tensors, weights.tolist(), None if divisor is None else float(divisor), dtype, out
    ):
        return out  # one fused pass, the same bits (methods/fused.py); torch's ops otherwise
    flat, models = out.view(-1), [tensor.reshape(-1) for tensor in tensors]
    total = torch.empty(min(blocks.BLOCK, flat.numel()), dtype=accumulate, device=first.device)
    for part in blocks.block_slices(flat.numel()):
        block = total[: flat[part].numel()].zero_()
        for model, weight in zip(models, weights, strict=True):
            block.addcmul_(model[part].to(dtype), weight)
        if divisor is not None:
            block.div_(divisor)
        flat[part] = block.to(dtype)
    return out
