"""The magnitude cut replayed: which entries torch's CPU sort puts first, as a selector.

sort_replay finds the entries (a threshold and which of the entries equal to it are kept);
`TopCut` applies that to any flat block of the task vector, as a 1.0/0.0 mask or, for the
TIES trim, by zeroing the dropped entries in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lossless.methods import sort_replay


def ranking_magnitudes(delta: torch.Tensor) -> torch.Tensor:
    """|delta| flattened, in float32 on CPU (sorting half floats there is slow or missing)."""
    magnitudes = delta.abs().reshape(-1)
    return magnitudes.float() if magnitudes.device.type == "cpu" else magnitudes


@dataclass(frozen=True)
class TopCut:
    """The first `k` of a sort of magnitudes, as torch's CPU sort orders them: every magnitude
    beyond `threshold` (above it for a descending sort, below for an ascending one), and of
    those equal to it the ones at `tied` (sorted flat indices)."""

    threshold: float
    tied: np.ndarray
    ascending: bool = False

    def select(self, delta: torch.Tensor, start: int) -> torch.Tensor:
        """1.0 for the kept entries of the block, 0.0 for the others, in delta's dtype."""
        mask = float_mask(delta)
        beyond = torch.lt if self.ascending else torch.gt
        if delta.dtype == torch.float32:  # the magnitudes ranked, in the mask's own memory
            beyond(torch.abs(delta, out=mask), self.threshold, out=mask)
        else:
            beyond(ranking_magnitudes(delta), self.threshold, out=mask)
        at = self._tied_in(delta, start)
        if at is not None:
            mask[at] = 1
        return mask

    __call__ = select  # a Selector

    @property
    def trims(self) -> bool:
        """Whether zero_dropped can stand for multiplying by the mask: a descending cut at a
        finite threshold (an inf delta times a 0.0 mask is NaN, which hardshrink never gives)."""
        return not self.ascending and math.isfinite(self.threshold)

    def zero_dropped(self, delta: torch.Tensor, start: int) -> None:
        """`delta.mul_(self.select(delta, start))` in one fused pass (`hardshrink` keeps
        |x| > threshold), the kept ties put back: 4× faster on a bf16 block. A dropped entry
        becomes +0 where the mask makes -0 of a negative one; no merge can show the difference,
        since every sum of the chain starts from +0 (tests/methods/test_top_cut.py)."""
        at = self._tied_in(delta, start)
        ties = None if at is None else delta[at]
        torch.hardshrink(delta, self.threshold, out=delta)
        if at is not None and ties is not None:
            delta[at] = ties

    def _tied_in(self, block: torch.Tensor, start: int) -> torch.Tensor | None:
        """Where the kept tied entries lie in the flat `block` starting at entry `start`."""
        lo, hi = np.searchsorted(self.tied, [start, start + block.numel()])
        if hi == lo:
            return None
        return torch.from_numpy(self.tied[lo:hi] - start).to(block.device)


def replayable(magnitudes: torch.Tensor, k: int) -> bool:
    """Whether replay_first can pick the first k of these magnitudes."""
    if magnitudes.device.type != "cpu" or magnitudes.dtype != torch.float32:
        return False
    # max() is NaN if any entry is: one pass, no mask tensor
    if not 0 < k < magnitudes.numel() or math.isnan(float(magnitudes.max())):
        return False
    return sort_replay.replay_agrees()


def replay_first(magnitudes: torch.Tensor, k: int, ascending: bool = False) -> TopCut | None:
    """The first `k` (0 < k < n) of torch's CPU sort of flat float32 `magnitudes`, replayed in
    O(n) by sort_replay (which scrambles them); None where it cannot be: not CPU float32, a NaN,
    a failed self-check, or the introsort's depth limit. An ascending sort compares exactly as
    a descending sort of the negated keys does, so it is replayed as that."""
    if not replayable(magnitudes, k):
        return None
    keys = magnitudes.contiguous()
    if ascending:
        keys.neg_()
    replay = sort_replay.replay_top_k(keys.numpy(), k)
    if replay is None:
        return None
    threshold, tied = replay
    return TopCut(-threshold if ascending else threshold, tied, ascending)


# the integer type that holds a float dtype's bits: what the compiled kernels see (bf16 has
# no numpy dtype), here and in fused.py
KINDS = {torch.bfloat16: torch.int16, torch.float32: torch.int32}


def as_bits(t: torch.Tensor) -> np.ndarray:
    """The flat entries of a contiguous CPU bf16 or float32 tensor as numpy integers of the
    same width, sharing its memory: the kernels are compiled per integer type."""
    return t.reshape(-1).view(KINDS[t.dtype]).numpy()


def replays_bits(delta: torch.Tensor, k: int) -> bool:
    """Whether replay_bits_first can pick the first k of |delta|."""
    return (
        sort_replay.COMPILED
        and delta.device.type == "cpu"
        and delta.dtype in KINDS
        and delta.is_contiguous()
        and 0 < k < delta.numel()
        and sort_replay.replay_agrees()
    )


def replay_bits_first(delta: torch.Tensor, k: int, scramble: bool) -> TopCut | None:
    """replay_first of |delta| (replays_bits true) without making the magnitudes in float32:
    the compiled replay ranks the bits with the sign cleared (2 bytes a key for bf16, and no
    conversion pass). `scramble`: the keys are made in delta's own memory. None at a NaN or
    the depth limit (delta scrambled then too, if allowed)."""
    from lossless.methods import sort_replay_kernel

    bits = as_bits(delta)
    keys = bits if scramble else np.empty_like(bits)
    found = sort_replay_kernel.cut_of_magnitudes(bits, keys, k)
    return None if found is None else TopCut(*found)


def float_mask(like: torch.Tensor) -> torch.Tensor:
    """An output for a comparison written as 1.0/0.0 in `like`'s dtype. The values a mask
    multiplies with are the same as a bool mask's, but on CPU a comparison into a bool tensor
    and the bool → float cast of the multiply run ~5× slower than into a float tensor."""
    return torch.empty(like.shape, dtype=like.dtype, device=like.device)
