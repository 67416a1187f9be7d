"""Which entries torch's CPU argsort puts first, found in linear time (for the TIES top-k trim).

mergekit keeps the k largest |delta| as `torch.argsort(w, descending=True)[:k]`. When the k-th
largest magnitude is shared by more entries than are still needed (routine in bf16 checkpoints,
whose deltas take few distinct values), *which* of the equal entries are kept is decided by the
order torch's sort leaves them in. On CPU that sort is libstdc++'s `std::sort` on (key, index)
pairs compared by key only: an introsort (median-of-three quicksort partitions down to ranges of
16, then one insertion sort), which is not stable, so the choice is not "lowest index first".

Only the partitions that contain position k decide which entries end up before it, so
`replay_top_k` replays exactly those partition steps, moving keys the way the sort does, one
64K block at a time with numpy. That is a quickselect, O(n) instead of the sort's O(n log n),
with no int64 index per entry. `replay_agrees()` checks the replay against torch.argsort once
per process; callers use the real sort when it disagrees (another torch build or C++ library)
or when a range would need the introsort's heap-sort fallback, which is not replayed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

SMALL = 16  # libstdc++'s _S_threshold: ranges this small wait for the final insertion sort
BLOCK = 1 << 16  # keys per numpy call: big enough to amortise the call, small enough for cache


def _median_slot(a: float, b: float, c: float) -> int:
    """Which of three keys (0, 1, 2) libstdc++'s `__move_median_to_first` moves to the front,
    comparing with `>` as a descending sort does (its branch order decides between equals)."""
    if a > b:
        if b > c:
            return 1
        return 2 if a > c else 0
    if a > c:
        return 0
    return 2 if b > c else 1


class _Ids:
    """The original index of the key at each position: the identity (plus the first pivot swap)
    until a partition has moved keys, then an array covering only the range still replayed."""

    def __init__(self, n: int) -> None:
        self.dtype = np.int32 if n < 2**31 else np.int64
        self.array: np.ndarray | None = None
        self.offset = 0
        self.swapped: tuple[int, int] | None = None  # a swap recorded while still the identity

    def get(self, pos: np.ndarray) -> np.ndarray:
        """Ids at `pos` (a chunk in ascending or descending order), positions all inside or all
        outside the materialised range: outside it nothing has moved but the first pivot swap."""
        if not pos.size:
            return pos
        low, high = (pos[0], pos[-1]) if pos[0] <= pos[-1] else (pos[-1], pos[0])
        inside = self.array is not None and self.offset <= low
        if inside and high < self.offset + self.array.size:
            return self.array[pos - self.offset]
        if self.swapped is None or not any(low <= s <= high for s in self.swapped):
            return pos
        i, j = self.swapped
        at_i, at_j = pos == i, pos == j
        ids = pos.copy()
        ids[at_i], ids[at_j] = j, i
        return ids

    def swap(self, i: int, j: int) -> None:
        if self.array is None:
            self.swapped = (i, j)  # only ever the first step's pivot swap
        else:
            a, b = i - self.offset, j - self.offset
            self.array[[a, b]] = self.array[[b, a]]

    def keep(self, first: int, last: int) -> None:
        """Materialise the ids of [first, last), the range the next steps work in."""
        if self.array is None:
            self.array = np.arange(first, last, dtype=self.dtype)
            self.offset = first
            if self.swapped is not None:
                for i, j in (self.swapped, self.swapped[::-1]):
                    if first <= i < last:
                        self.array[i - first] = j

    def put(self, pos: np.ndarray, ids: np.ndarray) -> None:
        assert self.array is not None
        self.array[pos - self.offset] = ids


def _pivot_to_front(keys: np.ndarray, ids: _Ids, first: int, last: int) -> float:
    """Median of keys at first+1, the middle and last-1 swapped to `first`, as the sort does."""
    slots = (first + 1, first + (last - first) // 2, last - 1)
    a, b, c = (float(keys[s]) for s in slots)
    chosen = slots[_median_slot(a, b, c)]
    keys[first], keys[chosen] = keys[chosen], keys[first]
    ids.swap(first, chosen)
    return float(keys[first])


def _block_counts(keys: np.ndarray, lo: int, hi: int, pivot: float) -> tuple[np.ndarray, ...]:
    """Per block of keys[lo:hi]: how many the left scan stops at (key <= pivot) and how many the
    right scan stops at (key >= pivot)."""
    starts = range(lo, hi, BLOCK)
    le = np.empty(len(starts), dtype=np.int64)
    ge = np.empty(len(starts), dtype=np.int64)
    scratch = np.empty(BLOCK, dtype=bool)
    for b, start in enumerate(starts):
        block = keys[start : min(start + BLOCK, hi)]
        flags = scratch[: block.size]
        le[b] = np.count_nonzero(np.less_equal(block, pivot, out=flags))
        ge[b] = np.count_nonzero(np.greater_equal(block, pivot, out=flags))
    return le, ge


def _stops(keys: np.ndarray, start: int, stop: int, pivot: float, left: bool) -> np.ndarray:
    block = keys[start:stop]
    return np.flatnonzero(block <= pivot if left else block >= pivot) + start


def _swap_count(
    keys: np.ndarray, lo: int, hi: int, pivot: float, le: np.ndarray, ge: np.ndarray
) -> int:
    """How many swaps Hoare's partition of keys[lo:hi] makes: the i-th left stop is swapped with
    the i-th right stop while it lies left of it, so the count is max over j of
    min(left stops in [lo, j], right stops in (j, hi))."""
    before_le = np.concatenate(([0], np.cumsum(le)))  # left stops before each block
    after_ge = int(ge.sum()) - np.concatenate(([0], np.cumsum(ge)))  # right stops from each block
    # the first block at whose end the left stops have caught up with the right stops
    b = int(np.argmax(before_le[1:] >= after_ge[1:]))
    start = lo + b * BLOCK
    block = keys[start : min(start + BLOCK, hi)]
    left = before_le[b] + np.cumsum(block <= pivot)
    right = after_ge[b] - np.cumsum(block >= pivot)
    return max(min(int(before_le[b]), int(after_ge[b])), int(np.minimum(left, right).max()))


def _nth_stop(
    keys: np.ndarray, lo: int, hi: int, pivot: float, counts: np.ndarray, nth: int, left: bool
) -> int | None:
    """Position of the nth (1-based) left stop counted from lo, or right stop counted from hi."""
    order = range(len(counts)) if left else range(len(counts) - 1, -1, -1)
    for b in order:
        if nth <= counts[b]:
            start = lo + b * BLOCK
            stops = _stops(keys, start, min(start + BLOCK, hi), pivot, left)
            return int(stops[nth - 1] if left else stops[-nth])
        nth -= int(counts[b])
    return None


def _stop_stream(
    keys: np.ndarray, lo: int, hi: int, pivot: float, counts: np.ndarray, total: int, left: bool
) -> Iterator[np.ndarray]:
    """The first `total` left stops in ascending order, or right stops in descending order."""
    order = range(len(counts)) if left else range(len(counts) - 1, -1, -1)
    for b in order:
        if total <= 0:
            return
        if counts[b]:
            start = lo + b * BLOCK
            stops = _stops(keys, start, min(start + BLOCK, hi), pivot, left)
            stops = stops[:total] if left else stops[::-1][:total]
            total -= stops.size
            yield stops


def _pairs(left: Iterator[np.ndarray], right: Iterator[np.ndarray]) -> Iterator[tuple[Any, Any]]:
    """Zip two streams of position chunks into equally long chunks (the swapped pairs)."""
    lbuf = rbuf = np.empty(0, dtype=np.int64)
    while True:
        if not lbuf.size:
            lbuf = next(left, None)
        if not rbuf.size:
            rbuf = next(right, None)
        if lbuf is None or rbuf is None:
            return
        n = min(lbuf.size, rbuf.size)
        yield lbuf[:n], rbuf[:n]
        lbuf, rbuf = lbuf[n:], rbuf[n:]


def replay_top_k(keys: np.ndarray, k: int) -> tuple[float, np.ndarray] | None:
    """The k first entries of a descending `torch.argsort(keys)` on CPU, as (threshold, tied):
    every key above `threshold` and the entries at `tied` (sorted indices) of the keys equal to
    it. `keys` (1-D float32, no NaN, 0 < k < len) is scrambled. None where the replay stops
    (the introsort's depth limit, never met on real tensors): sort instead."""
    n = keys.size
    ids = _Ids(n)
    first, last = 0, n
    depth = 2 * (n.bit_length() - 1)  # libstdc++: 2·floor(log2 n) partitions deep, then heapsort
    picked: list[tuple[float, np.ndarray]] = []  # (pivot, ids of keys equal to it) before k
    pivot = math.nan
    while last - first > SMALL and first < k < last:
        if depth == 0:
            return None
        depth -= 1
        pivot = _pivot_to_front(keys, ids, first, last)
        lo, hi = first + 1, last
        le, ge = _block_counts(keys, lo, hi, pivot)
        swaps = _swap_count(keys, lo, hi, pivot, le, ge)
        # the left scan ends at the next left stop, or at the last right stop, which now holds
        # a key <= pivot; that position starts the right part
        ends = [_nth_stop(keys, lo, hi, pivot, le, swaps + 1, left=True)]
        if swaps:
            ends.append(_nth_stop(keys, lo, hi, pivot, ge, swaps, left=False))
        cut = min(e for e in ends if e is not None)
        pairs = _pairs(
            _stop_stream(keys, lo, hi, pivot, le, swaps, left=True),
            _stop_stream(keys, lo, hi, pivot, ge, swaps, left=False),
        )
        if k < cut:  # continue in the left part; only its side of each swap matters
            ids.keep(first, cut)
            for lpos, rpos in pairs:
                keys[lpos] = keys[rpos]
                ids.put(lpos, ids.get(rpos))
            last = cut
        else:  # the left part is all before k: note its keys equal to the pivot, go right
            picked.append((pivot, ids.get(np.array([first]))))
            ids.keep(cut, last)
            for lpos, rpos in pairs:
                moved = keys[rpos]
                picked.append((pivot, ids.get(rpos)[moved == pivot]))
                keys[rpos] = keys[lpos]
                ids.put(rpos, ids.get(lpos))
            first = cut
    if first < k:  # k falls in a small range: the final insertion sort is stable
        segment = keys[first:last]
        take = np.argsort(-segment, kind="stable")[: k - first]
        threshold = float(segment[take[-1]])
        picked.append((threshold, ids.get(first + take[segment[take] == threshold])))
    else:  # k is a partition cut: the last left part ends with its pivot
        threshold = pivot
    tied = [chunk for value, chunk in picked if value == threshold]
    return threshold, np.sort(np.concatenate(tied).astype(np.int64))


@functools.cache
def replay_agrees() -> bool:
    """Once per process: does the replay pick what torch.argsort picks on tie-heavy keys?"""
    import torch

    generator = torch.Generator().manual_seed(0)
    for n, distinct in ((40, 3), (3000, 7), (70000, 50), (200003, 400)):
        keys = torch.randint(0, distinct, (n,), generator=generator).float()
        order = torch.argsort(keys, descending=True)
        for k in (1, n // 3, n // 2, n - 1):
            got = replay_top_k(keys.numpy().copy(), k)
            if got is None:
                return False
            threshold, tied = got
            expected = order[:k][keys[order[:k]] == threshold].sort().values
            if not (
                torch.equal(torch.from_numpy(tied), expected) and keys[order[k - 1]] == threshold
            ):
                return False
    return True
