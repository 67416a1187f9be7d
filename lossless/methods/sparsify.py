"""Task-vector sparsifiers of the TIES/DARE family: which entries of `model − base` survive.

Each sparsifier looks at one whole task vector (`delta`) and returns a `Kept`: which entries
survive and, with `rescale`, the factor that makes the L1 norm of the result equal the L1 norm
of the input (mergekit 0.1.5 rescales by the L1 norm for every sparsifier, not by 1/density:
for DARE at density 0.5 the factor is ≈2, but exactly sum|delta| / sum|kept|). The decision
needs the whole tensor (a top-k, random draws in order, norms); applying it is elementwise, so
the merge applies it block by block, with the same float operations per entry as on the whole
tensor. The `keep_*` functions apply it to the whole tensor at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lossless.errors import LosslessError
from lossless.methods.blocks import block_slices, lane_sums
from lossless.methods.top_cut import (
    TopCut,
    ranking_magnitudes,
    replay_bits_first,
    replay_first,
    replayable,
    replays_bits,
)

RESCALE_EPS = 1e-7  # below this L1 norm (before or after) the masked tensor is returned as is

# (flat block of delta, flat index of its first entry) → mask of the block's kept entries:
# bool, or 1.0/0.0 in delta's dtype (it multiplies the same)
Selector = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Kept:
    """The surviving entries of one task vector, to apply to any flat block of it.

    `select` None keeps everything (the delta itself, untouched); `zero` drops everything
    (exact zeros, not the ±0 a mask gives). Otherwise the block is multiplied by the mask in
    `work` dtype, then by `factor` if any, and cast back, as the whole-tensor code did.
    """

    select: Selector | None = None
    work: torch.dtype | None = None
    factor: torch.Tensor | None = None
    zero: bool = False

    def apply(self, delta: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The sparsified block; `delta` is flat and starts at entry `start` of the tensor."""
        if self.zero:
            return torch.zeros_like(delta)
        if self.select is None:
            return delta
        # a bool mask multiplies as 1.0/0.0 in `work` dtype, the float mask mergekit builds
        mask = self.select(delta, start)
        if mask.device != delta.device:  # decided on the host for a device merge (merge/device.py)
            mask = mask.to(delta.device)
        masked = delta.to(self.work or delta.dtype) * mask
        if self.factor is not None:
            masked = masked * self.factor
        return masked.to(delta.dtype)

    def apply_in_place(self, row: torch.Tensor, start: int = 0) -> None:
        """`row.copy_(self.apply(row, start))`, in place where the mask works in row's dtype: a
        TIES cut zeroes the dropped entries itself (TopCut.zero_dropped), a mask multiplies."""
        if self.zero:
            row.zero_()
            return
        if self.select is None:
            return
        if (self.work or row.dtype) != row.dtype:
            row.copy_(self.apply(row, start))
            return
        if isinstance(self.select, TopCut) and self.select.trims:
            self.select.zero_dropped(row, start)
        else:
            row.mul_(self.select(row, start))
        if self.factor is not None:
            row.mul_(self.factor)

    def apply_whole(self, delta: torch.Tensor) -> torch.Tensor:
        return self.apply(delta.reshape(-1)).reshape(delta.shape)


KEEP_ALL = Kept()
KEEP_NONE = Kept(zero=True)


def dense(mask: torch.Tensor, work: torch.dtype) -> Kept:
    """A mask decided entry by entry (random draws): stored as bool, one byte per entry."""
    flat = (mask != 0).reshape(-1)
    return Kept(lambda block, start: flat[start : start + block.numel()], work)


def with_rescale(delta: torch.Tensor, kept: Kept) -> Kept:
    """`kept` plus the L1 factor sum|delta| / sum|kept delta| (none if either is ~0), summed over
    the whole tensors in `kept.work` dtype exactly as before, so the factor is the same float."""
    if kept.select is None or kept.zero:
        return kept
    work = kept.work or delta.dtype
    original = delta.to(work).reshape(-1)
    before, after = L1(), L1()
    before.add(original)
    after.add(Kept(kept.select, kept.work).apply(original))
    return rescaled(kept, before.total(work), after.total(work))


def rescaled(kept: Kept, before: torch.Tensor, after: torch.Tensor) -> Kept:
    """`kept` with the factor before/after, or as is when either L1 norm is ~0."""
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return kept
    return Kept(kept.select, kept.work, before / after)


class L1:
    """An L1 norm summed block by block: each 64K block's `abs()` summed in the tensor's dtype
    (blocks.lane_sums: the same bits at any thread count), added in float64 in order. The
    whole-tensor and the streamed merge sum the same blocks, so the rescale factor is the same
    float whatever the memory budget."""

    def __init__(self) -> None:
        self._sum = 0.0

    def add(self, flat: torch.Tensor) -> None:
        """Add the blocks of `flat`, which starts on a block boundary of the tensor."""
        for part in block_slices(flat.numel()):
            self._sum += float(lane_sums(flat[part].abs()))

    def total(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(self._sum, dtype=dtype)


def rescale_l1(original: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """`masked` scaled so its L1 norm matches `original`'s; unchanged if either norm is ~0."""
    before = original.abs().sum()
    after = masked.abs().sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return masked
    return masked * (before / after)


def _argsort_top(magnitudes: torch.Tensor, keep: int) -> torch.Tensor:
    """The first `keep` entries of a full descending argsort, as a bool mask (what mergekit
    does; the reference the replay must match)."""
    mask = torch.zeros(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
    mask[torch.argsort(magnitudes, descending=True)[:keep]] = True
    return mask


def _owned_magnitudes(
    delta: torch.Tensor, remake: Callable[[], torch.Tensor] | None
) -> torch.Tensor:
    """|delta| flat in float32 for ranking. With `remake` (delta can be made again) a float32
    CPU delta is overwritten in place: one task vector's memory instead of two."""
    inplace = remake is not None and delta.device.type == "cpu" and delta.dtype == torch.float32
    if inplace and delta.is_contiguous():
        return delta.abs_().view(-1)
    return ranking_magnitudes(delta)  # always a fresh tensor


def top_k_selector(
    delta: torch.Tensor, keep: int, remake: Callable[[], torch.Tensor] | None = None
) -> Selector:
    """Selects the `keep` largest |delta| (0 < keep), as `argsort(descending=True)[:keep]` picks
    them, ties at the cut included. `delta` may be overwritten when `remake` is given.

    On CPU the pick is replayed in O(n) (sort_replay), on a bf16 or float32 delta's own bits
    where the compiled replay runs (top_cut.replay_bits_first). Elsewhere, or after a NaN or
    a failed self-check, a `kthvalue` threshold decides whenever the cut value is not shared
    by more entries than are still needed, and only then do we sort.
    """
    if replays_bits(delta, keep):
        cut = replay_bits_first(delta, keep, scramble=remake is not None)
        if cut is not None:
            return cut
        if remake is not None:  # stopped at a NaN or the depth limit, signs cleared in place
            delta = remake()
    magnitudes = _owned_magnitudes(delta, remake)
    if magnitudes.device.type != "cpu":
        mask = _threshold_mask(magnitudes, keep)
        if mask is not None:
            return lambda block, start: mask[start : start + block.numel()]
        # which of the tied entries are kept follows torch's CPU sort (CUDA orders ties
        # otherwise): replayed on a host copy, as a CPU merge would
        magnitudes, remake = magnitudes.float().cpu(), None
    if replayable(magnitudes, keep):
        cut = replay_first(magnitudes, keep)
        if cut is not None:
            return cut
        # the replay gave up and scrambled the magnitudes (and delta): rank afresh
        magnitudes = ranking_magnitudes(remake() if remake is not None else delta)
    found = _threshold_mask(magnitudes, keep)
    chosen = found if found is not None else _argsort_top(magnitudes, keep)
    return lambda block, start: chosen[start : start + block.numel()]


def _threshold_mask(magnitudes: torch.Tensor, keep: int) -> torch.Tensor | None:
    """The `keep` largest magnitudes by a `kthvalue` threshold, when no tie straddles the cut
    (no order is needed then); None when one does."""
    threshold = torch.kthvalue(magnitudes, magnitudes.numel() - keep + 1).values
    above, at = magnitudes > threshold, magnitudes == threshold
    return above | at if int(above.sum()) + int(at.sum()) == keep else None


def top_magnitude(
    delta: torch.Tensor, density: float, remake: Callable[[], torch.Tensor] | None = None
) -> Kept:
    """TIES trim: keep the `max(1, int(density·n))` largest |delta| entries. With `remake`
    (a function making `delta` again) `delta` itself may be overwritten."""
    if density >= 1:
        return KEEP_ALL
    if density <= 0 or delta.numel() == 0:
        return KEEP_NONE
    keep = max(1, int(density * delta.numel()))  # density 0.5 of 6 entries → 3
    return Kept(top_k_selector(delta, keep, remake), delta.dtype)


def middle_magnitude(delta: torch.Tensor, density: float, gamma: float) -> Kept:
    """Breadcrumbs: drop the `int(gamma·n)` largest entries (outliers), then the smallest.

    `int(density·n)` entries are kept; when density + gamma > 1 the outlier cut shrinks so the
    kept count is still reached (n=10, density 0.9, gamma 0.2 → only the single largest is cut).
    """
    if density >= 1:
        return KEEP_ALL
    if delta.device.type != "cpu":  # both cuts replay torch's CPU sort: decided on the host
        return middle_magnitude(delta.cpu(), density, gamma)
    count = delta.numel()
    keep = int(density * count)
    outliers = int(gamma * count)
    smallest = max(0, count - keep - outliers)
    # kept: places [smallest, smallest + keep) of an ascending sort, i.e. the first
    # smallest + keep minus the first `smallest`, each replayed without sorting
    ends = (smallest + keep, smallest)
    cuts = [replay_first(ranking_magnitudes(delta), end, ascending=True) for end in ends]
    if keep and all(c is not None or e in (0, count) for c, e in zip(cuts, ends, strict=True)):
        first = [_prefix(c, e, count) for c, e in zip(cuts, ends, strict=True)]
        return Kept(lambda block, start: first[0](block, start) - first[1](block, start))
    smallest_first = torch.sort(ranking_magnitudes(delta), descending=False).indices
    mask = torch.zeros(count, dtype=torch.bool, device=delta.device)
    mask[smallest_first[smallest : smallest + keep]] = True
    return dense(mask, delta.dtype)


def _prefix(cut: TopCut | None, end: int, count: int) -> Selector:
    """A float selector of the first `end` places of a sort: all, none or a replayed cut."""
    if cut is not None:
        return cut.select
    fill = 1.0 if end >= count else 0.0
    return lambda block, start: torch.full_like(block, fill)


def random_work_dtype(delta: torch.Tensor) -> torch.dtype:
    """torch.bernoulli lacks float16 on CPU, where every draw is made (merge/device.py): work in
    float32 (bf16 stays bf16)."""
    if delta.dtype == torch.bfloat16:
        return delta.dtype
    return torch.float32


def random_entries(delta: torch.Tensor, density: float, generator: torch.Generator | None) -> Kept:
    """DARE: keep each entry independently with probability `density`."""
    if density >= 1:
        return KEEP_ALL
    work = random_work_dtype(delta)
    probabilities = torch.full_like(delta, density, dtype=work, device="cpu")
    return dense(torch.bernoulli(probabilities, generator=generator), work)


def random_by_rank(
    delta: torch.Tensor, density: float, epsilon: float, generator: torch.Generator | None
) -> Kept:
    """DELLA MagPrune: keep probability grows linearly with the magnitude rank within a row.

    Along dim 1 (a 1-D tensor is one row), the smallest |delta| is kept with probability
    density − epsilon and the largest with density + epsilon (density 0.5, epsilon 0.15 →
    0.35 … 0.65), ranks evenly spaced in between.
    """
    if density >= 1:
        return KEEP_ALL
    if density <= 0:
        return KEEP_NONE
    check_della(density, epsilon)
    work = random_work_dtype(delta)
    # drawn on the host by the CPU generator, from ranks made there: a device merge draws
    # the same masks as a CPU one (merge/device.py)
    probabilities = rank_probabilities(delta.cpu(), density, epsilon, work)
    return dense(torch.bernoulli(probabilities, generator=generator), work)


def check_della(density: float, epsilon: float) -> None:
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise LosslessError(
            f"della: density ± epsilon must lie inside (0, 1); got density={density}, "
            f"epsilon={epsilon}",
            hint="lower `epsilon` (default 0.15) or move `density` away from 0 and 1",
        )


def rank_probabilities(
    delta: torch.Tensor, density: float, epsilon: float, work: torch.dtype
) -> torch.Tensor:
    """DELLA's keep probability of each entry from its magnitude rank in its row (along dim 1),
    so any block of whole rows gets the same numbers as the whole tensor.

    mergekit argsorts |delta| and argsorts that order again for the ranks. The first sort's tie
    order is kept (the same sort on the same comparisons); the second is an inverse
    permutation, made here by one scatter instead of a sort, and the rows' min and max rank
    (always the first and last rank, rounded alike) are made once instead of by two passes.
    """
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    order = torch.argsort(_order_keys(rows.abs()), dim=1, descending=False)
    positions = torch.arange(order.shape[1]).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions).to(work) + 1
    low = torch.tensor(0).to(work) + 1  # 1 = smallest magnitude in its row
    high = torch.tensor(order.shape[1] - 1).to(work) + 1
    rank_fraction = ((ranks - low) / (high - low)).clamp(0, 1)
    return (density - epsilon) + rank_fraction * 2 * epsilon


_SAME_ORDER_INTS = {
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _order_keys(magnitudes: torch.Tensor) -> torch.Tensor:
    """Non-negative floats as the signed integers of their bits: the same order and the same
    ties (so the sort makes the same comparisons and the same permutation), compared faster."""
    as_int = _SAME_ORDER_INTS.get(magnitudes.dtype)
    return magnitudes if as_int is None else magnitudes.view(as_int)


def _finish(delta: torch.Tensor, kept: Kept, rescale: bool) -> torch.Tensor:
    return (with_rescale(delta, kept) if rescale else kept).apply_whole(delta)


def keep_top_magnitude(delta: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    return _finish(delta, top_magnitude(delta, density), rescale)


def keep_middle_magnitude(
    delta: torch.Tensor, density: float, gamma: float, rescale: bool
) -> torch.Tensor:
    return _finish(delta, middle_magnitude(delta, density, gamma), rescale)


def keep_random(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator | None
) -> torch.Tensor:
    return _finish(delta, random_entries(delta, density, generator), rescale)


def keep_random_by_rank(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    rescale: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    return _finish(delta, random_by_rank(delta, density, epsilon, generator), rescale)
