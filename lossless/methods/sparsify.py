"""Task-vector sparsifiers of the TIES/DARE family: which entries of `model − base` survive.

Each function takes one task vector (`delta`) and returns a tensor of the same shape where the
dropped entries are 0. With `rescale`, the survivors are multiplied so that the L1 norm of the
result equals the L1 norm of the input (mergekit 0.1.5 rescales by the L1 norm for every
sparsifier, not by 1/density: for DARE at density 0.5 the factor is ≈2, but exactly
sum|delta| / sum|kept|).
"""

from __future__ import annotations

import torch

from lossless.errors import LosslessError

RESCALE_EPS = 1e-7  # below this L1 norm (before or after) the masked tensor is returned as is


def rescale_l1(original: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """`masked` scaled so its L1 norm matches `original`'s; unchanged if either norm is ~0."""
    before = original.abs().sum()
    after = masked.abs().sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return masked
    return masked * (before / after)


def _apply_mask(delta: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    masked = delta * mask
    return rescale_l1(delta, masked) if rescale else masked


def _ranking_magnitudes(delta: torch.Tensor) -> torch.Tensor:
    """|delta| flattened, in float32 on CPU (sorting half floats there is slow or missing)."""
    magnitudes = delta.abs().reshape(-1)
    return magnitudes.float() if magnitudes.device.type == "cpu" else magnitudes


def keep_top_magnitude(delta: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """TIES trim: keep the `max(1, int(density·n))` largest |delta| entries."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    keep = max(1, int(density * delta.numel()))  # density 0.5 of 6 entries → 3
    magnitudes = _ranking_magnitudes(delta)
    # Fast path, O(n) and no index tensor: the keep-th largest magnitude is a threshold. It picks
    # exactly the entries a full sort would whenever the threshold value is not shared by more
    # entries than are still needed; only then does the order among equals matter, and we sort
    # like mergekit does.
    threshold = torch.kthvalue(magnitudes, magnitudes.numel() - keep + 1).values
    above = magnitudes > threshold
    at = magnitudes == threshold
    if int(above.sum()) + int(at.sum()) == keep:
        mask = (above | at).to(delta.dtype)
    else:
        largest_first = torch.argsort(magnitudes, descending=True)
        mask = torch.zeros(delta.numel(), dtype=delta.dtype, device=delta.device)
        mask[largest_first[:keep]] = 1
    return _apply_mask(delta, mask.reshape_as(delta), rescale)


def keep_middle_magnitude(
    delta: torch.Tensor, density: float, gamma: float, rescale: bool
) -> torch.Tensor:
    """Breadcrumbs: drop the `int(gamma·n)` largest entries (outliers), then the smallest.

    `int(density·n)` entries are kept; when density + gamma > 1 the outlier cut shrinks so the
    kept count is still reached (n=10, density 0.9, gamma 0.2 → only the single largest is cut).
    """
    if density >= 1:
        return delta
    count = delta.numel()
    keep = int(density * count)
    outliers = int(gamma * count)
    smallest = max(0, count - keep - outliers)
    smallest_first = torch.sort(_ranking_magnitudes(delta), descending=False).indices
    mask = torch.zeros(count, dtype=delta.dtype, device=delta.device)
    mask[smallest_first[smallest : smallest + keep]] = 1
    return _apply_mask(delta, mask.reshape_as(delta), rescale)


def _random_work_dtype(delta: torch.Tensor) -> torch.dtype:
    """torch.bernoulli lacks float16 on CPU: work in float32 there (bf16 stays bf16)."""
    if delta.device.type != "cpu" or delta.dtype == torch.bfloat16:
        return delta.dtype
    return torch.float32


def keep_random(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """DARE: keep each entry independently with probability `density`."""
    if density >= 1:
        return delta
    work = _random_work_dtype(delta)
    probabilities = torch.full_like(delta, density, dtype=work)
    mask = torch.bernoulli(probabilities, generator=generator)
    return _apply_mask(delta.to(work), mask, rescale).to(delta.dtype)


def keep_random_by_rank(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    rescale: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """DELLA MagPrune: keep probability grows linearly with the magnitude rank within a row.

    Along dim 1 (a 1-D tensor is one row), the smallest |delta| is kept with probability
    density − epsilon and the largest with density + epsilon (density 0.5, epsilon 0.15 →
    0.35 … 0.65), ranks evenly spaced in between.
    """
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise LosslessError(
            f"della: density ± epsilon must lie inside (0, 1); got density={density}, "
            f"epsilon={epsilon}",
            hint="lower `epsilon` (default 0.15) or move `density` away from 0 and 1",
        )
    shape = delta.shape
    work = _random_work_dtype(delta)
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    order = torch.argsort(rows.abs(), dim=1, descending=False)
    ranks = order.argsort(dim=1).to(work) + 1  # 1 = smallest magnitude in its row
    low = ranks.min(dim=1, keepdim=True).values
    high = ranks.max(dim=1, keepdim=True).values
    rank_fraction = ((ranks - low) / (high - low)).clamp(0, 1)
    probabilities = (density - epsilon) + rank_fraction * 2 * epsilon
    mask = torch.bernoulli(probabilities, generator=generator).to(work)
    kept = _apply_mask(rows.to(work), mask, rescale)
    return kept.to(delta.dtype).reshape(shape)
