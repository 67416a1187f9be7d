"""The exact k-th largest (or smallest) magnitude of a tensor seen only block by block.

The TIES family ranks `|delta|` in float32 (top_cut.ranking_magnitudes). For non-negative
float32 numbers the order of the values is the order of their bit patterns read as integers, so
the k-th value is found by a radix select over the bits, streaming: one pass counts the high 16
bits of every entry (65,536 bins), which names the bin holding rank k; a second pass counts the
low 16 bits of the entries in that bin, which names the exact value. The magnitudes of a bf16
task vector have no low bits (the first pass notes whether any entry has), so for them the
first pass is exact and the second is skipped: 5-6 of the 17-19 s a 1.05G-entry cut took.
Memory: two histograms of 65,536 int64 counts, whatever the tensor's size. Besides the value
it gives how many entries lie strictly beyond it and how many equal it, which says whether the
entries tied at the cut need the tie order of torch's sort (sort_replay) or are all kept.

NaN sorts beyond +inf (its bits are larger), as torch's sort puts it; `Rank.finite` says
whether any inf or NaN was seen (the tie-order replay takes no NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

BINS = 1 << 16
INF_BITS = 0x7F800000  # +inf; NaNs lie above it


@dataclass(frozen=True)
class Rank:
    """The value at rank k of a sort, and what lies around it."""

    value: float
    beyond: int  # entries strictly before it in the sort (larger, or smaller when ascending)
    equal: int  # entries equal to it, itself included
    finite: bool = True  # no inf or NaN among the magnitudes
    high_bits_only: bool = False  # no magnitude has low bits (those of a bf16 task vector)

    def all_tied_kept(self, k: int) -> bool:
        """Whether the first k of the sort are exactly the entries up to and at the value."""
        return self.beyond + self.equal == k


def _bits(magnitudes: torch.Tensor) -> torch.Tensor:
    return magnitudes.reshape(-1).contiguous().view(torch.int32)


def _locate(hist: torch.Tensor, k: int, largest: bool) -> tuple[int, int]:
    """(bin holding the k-th entry, entries in the bins before it), counting from the top bin
    when `largest`."""
    ordered = hist.flip(0) if largest else hist
    cumulative = ordered.cumsum(0)
    i = int(torch.searchsorted(cumulative, torch.tensor([k], dtype=cumulative.dtype)))
    before = int(cumulative[i]) - int(ordered[i])
    return (BINS - 1 - i if largest else i), before


def kth_magnitude(
    blocks: Callable[[], Iterable[torch.Tensor]],
    k: int,
    *,
    largest: bool = True,
    high_pass: Callable[[torch.Tensor], bool | None] | None = None,
) -> Rank:
    """The k-th (1-based) largest, or smallest, of the float32 magnitudes that `blocks()` yields
    (called twice, or once when no entry has low bits: each call must yield the same numbers;
    each block flat, non-negative). `high_pass(high)`, where given, makes the first pass
    itself: it counts the high 16 bits of those magnitudes into `high` and says whether any
    has low bits (None, with nothing counted: `blocks()` then makes it)."""
    high = torch.zeros(BINS, dtype=torch.int64)
    low_bits = high_pass(high) if high_pass is not None else None
    if low_bits is None:  # whether any entry has low bits: never for the magnitudes of bf16
        low_bits = False
        for block in blocks():
            bits = _bits(block)
            high += torch.bincount(bits >> 16, minlength=BINS)
            low_bits = low_bits or bool(torch.any(bits & 0xFFFF))
    top, before = _locate(high, k, largest)
    bottom, equal = 0, int(high[top])  # no low bits: every entry of the bin is one value
    if low_bits:
        low = torch.zeros(BINS, dtype=torch.int64)
        for block in blocks():
            bits = _bits(block)
            low += torch.bincount(bits[(bits >> 16) == top] & 0xFFFF, minlength=BINS)
        bottom, before_low = _locate(low, k - before, largest)
        before, equal = before + before_low, int(low[bottom])
    pattern = torch.tensor([(top << 16) | bottom], dtype=torch.int32)
    finite = not bool(high[INF_BITS >> 16 :].any())
    value = float(pattern.view(torch.float32))
    return Rank(value, before, equal, finite, high_bits_only=not low_bits)
