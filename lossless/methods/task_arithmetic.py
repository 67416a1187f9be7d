"""The task-arithmetic family: task_arithmetic, ties, dare_*, breadcrumbs*, della*.

Every member is the same chain (peft merge_utils style), differing only in the sparsifier and
whether signs are elected:

    task vectors (model − base) → sparsify each → × weight → [elect sign → disjoint mask]
    → sum → [÷ sum of (kept) weights if normalize] → × lambda → base + result

Defaults follow mergekit 0.1.5 (`normalize`: ties and della True, the rest False; `rescale`:
dare_* and della* True, the rest False; `lambda` 1 for all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from lossless.methods import sparsify

# (delta, per-model params, rescale, generator) → sparsified delta
Sparsifier = Callable[[torch.Tensor, Mapping[str, Any], bool, torch.Generator | None], torch.Tensor]


def task_vectors(tensors: Sequence[torch.Tensor], base: torch.Tensor) -> list[torch.Tensor]:
    return [tensor - base for tensor in tensors]


def weight_column(model_params: Sequence[Mapping[str, Any]], like: torch.Tensor) -> torch.Tensor:
    """Weights shaped [n, 1, 1, ...] to broadcast against stacked deltas [n, *shape]."""
    weights = torch.tensor(
        [float(p["weight"]) for p in model_params], dtype=like.dtype, device=like.device
    )
    return weights.view(-1, *([1] * (like.dim() - 1)))


def elect_sign_mask(weighted: torch.Tensor, mask_dtype: torch.dtype) -> torch.Tensor:
    """True where an entry's sign equals the sign of the sum over models (ties go to +).

    Zeros never agree, so a trimmed entry counts neither in the sum nor in the divisor.
    """
    signs = weighted.sign().to(mask_dtype)
    majority = (weighted.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    return signs == majority


def disjoint_merge(
    weighted: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """Sum of the agreeing entries, divided by the sum of their weights if `normalize`."""
    merged = (weighted * mask).sum(dim=0)
    if normalize:
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        merged = merged / divisor
    return merged


def plain_merge(weighted: torch.Tensor, weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Sum of all weighted deltas, divided by the weight sum (unless it is ~0) if `normalize`."""
    merged = weighted.sum(dim=0)
    if normalize:
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
        merged = merged / divisor
    return merged


def merge_task_vectors(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    sparsifier: Sparsifier | None,
    elect_sign: bool,
    normalize_default: bool,
    rescale_default: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The shared chain; `sparsifier` None = keep every entry, `elect_sign` = TIES consensus."""
    if not tensors:
        return base
    rescale = bool(params.get("rescale", rescale_default))
    normalize = bool(params.get("normalize", normalize_default))
    deltas = task_vectors(tensors, base)
    if sparsifier is not None:
        deltas = [
            sparsifier(delta, p, rescale, generator)
            for delta, p in zip(deltas, model_params, strict=True)
        ]
    stacked = torch.stack(deltas, dim=0)
    weights = weight_column(model_params, stacked)
    weighted = stacked * weights
    if elect_sign:
        # int8_mask only saves memory in mergekit; the boolean mask below is the same either way.
        mask_dtype = torch.int8 if params.get("int8_mask", False) else base.dtype
        merged = disjoint_merge(weighted, weights, elect_sign_mask(weighted, mask_dtype), normalize)
    else:
        merged = plain_merge(weighted, weights, normalize)
    scale = float(params.get("lambda", 1.0))
    if scale != 1:
        merged = merged * scale
    return (base + merged).to(base.dtype)


def _top_magnitude(
    delta: torch.Tensor, p: Mapping[str, Any], rescale: bool, _g: Any
) -> torch.Tensor:
    return sparsify.keep_top_magnitude(delta, float(p.get("density", 1.0)), rescale)


def _random(delta: torch.Tensor, p: Mapping[str, Any], rescale: bool, g: Any) -> torch.Tensor:
    return sparsify.keep_random(delta, float(p.get("density", 1.0)), rescale, g)


def _outliers(delta: torch.Tensor, p: Mapping[str, Any], rescale: bool, _g: Any) -> torch.Tensor:
    density, gamma = float(p.get("density", 1.0)), float(p.get("gamma", 0.01))
    return sparsify.keep_middle_magnitude(delta, density, gamma, rescale)


def _rank_random(delta: torch.Tensor, p: Mapping[str, Any], rescale: bool, g: Any) -> torch.Tensor:
    density, epsilon = float(p.get("density", 1.0)), float(p.get("epsilon", 0.15))
    return sparsify.keep_random_by_rank(delta, density, epsilon, rescale, g)


def _member(
    sparsifier: Sparsifier | None, elect_sign: bool, normalize: bool, rescale: bool, doc: str
) -> Callable[..., torch.Tensor]:
    """One table entry: the shared chain with this member's sparsifier and defaults."""

    def merge(
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        model_params: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if base is None:
            raise ValueError("task-arithmetic methods need the base model's tensor")
        return merge_task_vectors(
            tensors,
            base,
            model_params,
            params,
            sparsifier=sparsifier,
            elect_sign=elect_sign,
            normalize_default=normalize,
            rescale_default=rescale,
            generator=generator,
        )

    merge.__doc__ = doc
    return merge


#                      sparsifier      sign   normalize rescale
task_arithmetic = _member(None, False, False, False, "base + Σ wᵢ·(xᵢ − base), × lambda.")
ties = _member(_top_magnitude, True, True, False, "Top-k trim, sign election, disjoint mean.")
dare_ties = _member(_random, True, False, True, "Random drop + L1 rescale, sign election.")
dare_linear = _member(_random, False, False, True, "Random drop + L1 rescale, plain sum.")
breadcrumbs = _member(_outliers, False, False, False, "Outlier and small cut, plain sum.")
breadcrumbs_ties = _member(_outliers, True, False, False, "Outlier/small cut, sign election.")
della = _member(_rank_random, True, True, True, "Rank-weighted random drop, sign election.")
della_linear = _member(_rank_random, False, False, True, "Rank-weighted random drop, plain sum.")
