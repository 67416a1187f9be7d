"""SCE (arXiv 2408.07990): Select high-variance entries, Calculate weights, Erase minority signs.

Chain: task vectors → keep the `select_topk` fraction of entries (of those whose variance
across models is non-zero) with the largest variance → per-model weight = mean square of its
task vector, normalised to sum 1 → TIES sign election → weighted disjoint mean.
No per-model `weight`: the weights come from the task vectors themselves.

The mean squares are sums over 64K blocks in float64 added in order (`Energy`), so a tensor
streamed in row blocks (streamed_sce.py) gets the same weights as the whole tensor. The
selection is torch.topk's, as mergekit's; the streamed path finds the same cut by radix select
and, when entries tied at it are kept only in part, replays topk's choice among them, except
where topk uses a heap (select_topk below about 1/64), or sees an inf or NaN variance: there
it keeps the lowest-index tied entries and says so (docs/recipes.md, "sce and streaming").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lossless.methods.blocks import block_slices
from lossless.methods.task_arithmetic import elect_sign_mask


def keep_count(nonzero: int, fraction: float) -> int:
    """How many entries the selection keeps: `int(nonzero · fraction)` computed as torch
    computes it for a count_nonzero tensor (in float32)."""
    return int(torch.tensor(nonzero, dtype=torch.int64) * fraction)


def select_high_variance(
    deltas: torch.Tensor, fraction: float, mask_dtype: torch.dtype
) -> torch.Tensor:
    """Mask over one tensor's entries: top `int(nonzero_variance · fraction)` by variance."""
    if fraction <= 0:
        return torch.zeros_like(deltas[0], dtype=mask_dtype)
    if fraction >= 1:
        return torch.ones_like(deltas[0], dtype=mask_dtype)
    variance = torch.var(deltas, dim=0, unbiased=False)
    keep = keep_count(int(torch.count_nonzero(variance)), fraction)
    mask = torch.zeros_like(variance, dtype=mask_dtype)
    if keep == 0:
        return mask
    # on the host: CUDA's topk picks other entries among those tied at the cut (merge/device.py)
    _, chosen = torch.topk(variance.abs().view(-1).cpu(), k=keep, largest=True)
    mask.view(-1)[chosen.to(mask.device)] = 1
    return mask


class Energy:
    """Each model's sum of squares of its (selected) task vector: per 64K block in float64 by
    numpy's pairwise sum (no thread count in it), the blocks added in order. Blocks fed in
    order that start on 64K boundaries give the same sums whatever their size."""

    def __init__(self, models: int) -> None:
        self.sums = [0.0] * models
        self.count = 0

    def add(self, deltas: torch.Tensor) -> None:
        """The next entries of every model's task vector: `deltas` of shape (models, ...)."""
        flat = deltas.reshape(deltas.shape[0], -1).cpu()  # numpy sums on the host
        for part in block_slices(flat.shape[1]):
            for i in range(flat.shape[0]):
                values = flat[i, part].double().numpy()
                self.sums[i] += float(np.add.reduce(np.square(values)))
        self.count += flat.shape[1]

    def weights(self, dtype: torch.dtype) -> torch.Tensor:
        """Mean squares normalised to sum 1 (uniform if all are ~0), in `dtype`."""
        energy = torch.tensor(self.sums, dtype=torch.float64) / max(self.count, 1)
        total = float(energy.sum())
        if abs(total) < 1e-6:
            return torch.ones(len(self.sums), dtype=dtype) / len(self.sums)
        return (energy / total).to(dtype)


def energy_weights(deltas: torch.Tensor) -> torch.Tensor:
    """Mean of squares per model, normalised to sum 1 (uniform if all are ~0)."""
    energy = Energy(deltas.shape[0])
    energy.add(deltas)
    return energy.weights(deltas.dtype)


def combine(deltas: torch.Tensor, base: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sign election and the weighted mean of the agreeing entries, entry by entry."""
    agree = elect_sign_mask(deltas)
    weights = weights.to(deltas.device)  # summed on the host (Energy)
    kept = weights.view(-1, *([1] * (deltas.dim() - 1))) * agree
    merged = (deltas * kept).sum(dim=0) / torch.sum(kept, dim=0).clamp(min=1e-6)
    return base + merged


def mask_dtype(params: Mapping[str, Any], dtype: torch.dtype) -> torch.dtype:
    return torch.int8 if params.get("int8_mask", False) else dtype


def sce(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    if not tensors:
        return base
    deltas = torch.stack([x - base for x in tensors], dim=0)
    fraction = float(params.get("select_topk", 1.0))
    if fraction < 1:
        mask = select_high_variance(deltas, fraction, mask_dtype(params, base.dtype))
        deltas = deltas * mask.unsqueeze(0)
    return combine(deltas, base, energy_weights(deltas))
