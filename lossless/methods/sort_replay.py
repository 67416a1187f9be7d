"""Which entries torch's CPU argsort puts first, found in linear time (for the TIES top-k trim).

mergekit keeps the k largest |delta| as `torch.argsort(w, descending=True)[:k]`. When the k-th
largest magnitude is shared by more entries than are still needed (routine in bf16 checkpoints,
whose deltas take few distinct values), *which* of the equal entries are kept is decided by the
order torch's sort leaves them in. On CPU that sort is libstdc++'s `std::sort` on (key, index)
pairs compared by key only: an introsort (median-of-three quicksort partitions down to ranges of
16, then one insertion sort), which is not stable, so the choice is not "lowest index first".

Only the partitions that contain position k decide which entries end up before it, so
`replay_top_k` replays exactly those partition steps, moving keys the way the sort does, one
64K block at a time with numpy (the scans' stops: sort_replay_scans.py). That is a
quickselect, O(n) instead of the sort's O(n log n), with no int64 index per entry. `replay_agrees()` checks the replay against torch.argsort once
per process; callers use the real sort when it disagrees (another torch build or C++ library)
or when a range would need the introsort's heap-sort fallback, which is not replayed.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from lossless.methods import sort_replay_scans as scans
from lossless.methods.blocks import KERNELS

SMALL = 16  # libstdc++'s _S_threshold: ranges this small wait for the final insertion sort
COMPILED = KERNELS  # the in-memory replay compiled (sort_replay_kernel.py); tests switch it here


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


def _pivot_slot(keys: np.ndarray) -> int:
    """Where the median of keys[1], the middle and the last one lies; the sort swaps it to 0."""
    slots = (1, keys.size // 2, keys.size - 1)
    return slots[_median_slot(*(float(keys[s]) for s in slots))]


def _first_step_ids(pos: np.ndarray, swapped: int) -> np.ndarray:
    """Ids at `pos` before any move but the first pivot swap (0 ↔ swapped)."""
    if swapped == 0 or not pos.size:
        return pos
    low, high = pos.min(), pos.max()
    if low > 0 and not low <= swapped <= high:
        return pos  # the usual chunk: no id to fix
    ids = np.where(pos == swapped, 0, pos)
    return np.where(pos == 0, swapped, ids) if low == 0 else ids


def _first_step_range(lo: int, hi: int, swapped: int, dtype: type) -> np.ndarray:
    """Ids of positions [lo, hi) after the first pivot swap, to keep replaying in."""
    ids: np.ndarray = np.arange(lo, hi, dtype=dtype)
    for i, j in ((0, swapped), (swapped, 0)):
        if lo <= i < hi:
            ids[i - lo] = j
    return ids


def index_type(n: int) -> type:
    """The integer type for the indices of n keys: 4 bytes each while they fit."""
    return np.int32 if n < 2**31 else np.int64


def depth_limit(n: int) -> int:
    """libstdc++: 2·floor(log2 n) partitions deep, then heapsort."""
    return 2 * (n.bit_length() - 1)


class _AllIds:
    """The original index of every key of the range, made at the first step that moves keys
    (before it, a key's index is its position but for the first pivot swap)."""

    threshold: float | None = None

    def __init__(self, n: int) -> None:
        self.dtype = index_type(n)
        self.ids: np.ndarray | None = None
        self.swapped = 0  # the first step's pivot swap, while `ids` is None

    def at(self, pos: np.ndarray) -> np.ndarray:
        return self.ids[pos] if self.ids is not None else _first_step_ids(pos, self.swapped)

    def pivot_swap(self, chosen: int) -> None:
        if self.ids is None:
            self.swapped = chosen
        else:
            self.ids[0], self.ids[chosen] = self.ids[chosen], self.ids[0]

    def begin(self, lo: int, hi: int) -> None:
        """A step that keeps [lo, hi) starts moving keys."""
        if self.ids is None:
            self.kept, self.shift = _first_step_range(lo, hi, self.swapped, self.dtype), lo
        else:
            self.kept, self.shift = self.ids, 0

    def swap(self, keys: np.ndarray, lpos: np.ndarray, rpos: np.ndarray, left: bool) -> None:
        """Before keys[lpos] and keys[rpos] trade places; only the kept side is written."""
        if left:
            self.kept[lpos] = self.at(rpos)
        else:
            self.kept[rpos - self.shift] = self.at(lpos)

    def end(self, lo: int, hi: int) -> None:
        self.ids = self.kept[lo - self.shift : hi - self.shift]


class _TiedIds:
    """Only the indices of the keys equal to `threshold` (known beforehand), by position:
    4 bytes a key less than _AllIds, for ranges too large to hold twice (replay_stream.py)."""

    def __init__(self, positions: np.ndarray, ids: np.ndarray, threshold: float) -> None:
        order = np.argsort(positions, kind="stable")
        self.pos, self.ids, self.threshold = positions[order], ids[order], threshold

    def at(self, pos: np.ndarray) -> np.ndarray:
        return self.ids[np.searchsorted(self.pos, pos)]

    def _move(self, src: np.ndarray, dst: np.ndarray) -> None:
        self.moved[np.searchsorted(self.pos, src)] = dst

    def pivot_swap(self, chosen: int) -> None:
        moved = self.pos.copy()
        moved[self.pos == 0], moved[self.pos == chosen] = chosen, 0
        self._settle(moved)

    def begin(self, lo: int, hi: int) -> None:
        self.moved = self.pos.copy()

    def swap(self, keys: np.ndarray, lpos: np.ndarray, rpos: np.ndarray, left: bool) -> None:
        # both ways: a tied key leaving the kept side must not stay listed there
        tied_l, tied_r = keys[lpos] == self.threshold, keys[rpos] == self.threshold
        if tied_l.any():
            self._move(lpos[tied_l], rpos[tied_l])
        if tied_r.any():
            self._move(rpos[tied_r], lpos[tied_r])

    def end(self, lo: int, hi: int) -> None:
        inside = (self.moved >= lo) & (self.moved < hi)
        self.ids = self.ids[inside]
        self._settle(self.moved[inside] - lo)

    def _settle(self, positions: np.ndarray) -> None:
        order = np.argsort(positions, kind="stable")
        self.pos, self.ids = positions[order], self.ids[order]


def replay_top_k(
    keys: np.ndarray,
    k: int,
    *,
    tied: tuple[np.ndarray, np.ndarray, float] | None = None,
    depth: int | None = None,
    small: int = SMALL,
) -> tuple[float, np.ndarray] | None:
    """The k first entries of a descending `torch.argsort(keys)` on CPU, as (threshold, tied):
    every key above `threshold` and the entries at `tied` (sorted indices) of the keys equal to
    it. `keys` (1-D float32, no NaN, 0 < k < len) is scrambled. None where the replay stops
    (the introsort's depth limit, never met on real tensors): sort instead. With `small=3` it
    replays `torch.topk` where that calls `std::nth_element` (`64·k > len`): the same
    partitions, down to ranges of 3 (libstdc++'s introselect), then an insertion sort.

    Each step works on the range still holding position k, re-based to start at 0, and follows
    where the original index of each key went. A range that the sort reached after partitions
    of a larger array (replay_stream.py) comes with `tied`: the positions and original indices
    of its keys equal to the threshold (the k-th largest key, known beforehand), the only ones
    followed, and the `depth` of partitions left.
    """
    depth = depth_limit(keys.size) if depth is None else depth
    if tied is None and COMPILED:  # the same steps, compiled and outside the GIL
        from lossless.methods import sort_replay_kernel

        found, threshold, chosen = sort_replay_kernel.replay(
            keys, np.arange(keys.size, dtype=index_type(keys.size)), k, small, depth
        )
        return (float(threshold), chosen) if found else None
    ids: _AllIds | _TiedIds = _AllIds(keys.size) if tied is None else _TiedIds(*tied)
    picked: list[tuple[float, np.ndarray]] = []  # (pivot, ids of keys equal to it) before k
    pivot = math.nan

    def picks(value: float) -> bool:
        return ids.threshold is None or value == ids.threshold

    while keys.size > small and 0 < k < keys.size:
        if depth == 0:
            return None
        depth -= 1
        size = keys.size
        chosen = _pivot_slot(keys)
        keys[0], keys[chosen] = keys[chosen], keys[0]
        ids.pivot_swap(chosen)
        pivot = float(keys[0])
        le, ge = scans.block_counts(keys, 1, size, pivot)
        swaps = scans.swap_count(keys, 1, size, pivot, le, ge)
        # the left scan ends at the next left stop, or at the last right stop, which now holds
        # a key <= pivot; that position starts the right part
        ends = [scans.nth_stop(keys, 1, size, pivot, le, swaps + 1, left=True)]
        if swaps:
            ends.append(scans.nth_stop(keys, 1, size, pivot, ge, swaps, left=False))
        cut = min(e for e in ends if e is not None)
        pairs = scans.pairs(
            scans.stop_stream(keys, 1, size, pivot, le, swaps, left=True),
            scans.stop_stream(keys, 1, size, pivot, ge, swaps, left=False),
        )
        if k < cut:  # go on in the left part; only its side of each swap matters
            ids.begin(0, cut)
            for lpos, rpos in pairs:
                ids.swap(keys, lpos, rpos, left=True)
                keys[lpos] = keys[rpos]
            ids.end(0, cut)
            keys = keys[:cut]
        else:  # the left part is all before k: note its keys equal to the pivot, go right
            if picks(pivot):
                picked.append((pivot, ids.at(np.zeros(1, dtype=np.int64))))
            ids.begin(cut, size)
            for lpos, rpos in pairs:
                at_pivot = keys[rpos] == pivot
                if at_pivot.any() and picks(pivot):
                    picked.append((pivot, ids.at(rpos[at_pivot])))
                ids.swap(keys, lpos, rpos, left=False)
                keys[rpos] = keys[lpos]
            ids.end(cut, size)
            keys, k = keys[cut:], k - cut
    if k > 0:  # k falls in a range of at most `small`: the final insertion sort is stable
        take = np.argsort(-keys.astype(np.float64), kind="stable")[:k]  # uint16 keys too
        threshold = float(keys[take[-1]])
        picked.append((threshold, ids.at(take[keys[take] == threshold])))
    else:  # k is a partition cut: the last left part ends with its pivot
        threshold = pivot
    chunks = [chunk for value, chunk in picked if value == threshold]
    return threshold, np.sort(np.concatenate(chunks).astype(np.int64))


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


TOPK_SMALL = 3  # libstdc++'s introselect partitions ranges larger than 3


def topk_replays(n: int, k: int) -> bool:
    """Whether torch.topk's CPU pick of the k largest of n is the introselect replayed with
    `small=TOPK_SMALL`: where it calls std::nth_element (64·k > n), not std::partial_sort,
    whose heap decides the ties in an order that only the whole heap of k entries can replay."""
    return 0 < k < n and 64 * k > n


@functools.cache
def topk_replay_agrees() -> bool:
    """Once per process: does the replay pick what torch.topk picks on tie-heavy keys?"""
    import torch

    generator = torch.Generator().manual_seed(0)
    for n, distinct in ((40, 3), (3000, 7), (70000, 50), (100003, 400)):
        keys = torch.randint(0, distinct, (n,), generator=generator).float()
        for k in (n // 64 + 1, n // 3, n // 2, n - 1):
            got = replay_top_k(keys.numpy().copy(), k, small=TOPK_SMALL)
            chosen = torch.topk(keys, k).indices
            threshold = float(keys[chosen].min())
            expected = chosen[keys[chosen] == threshold].sort().values
            if (
                got is None
                or got[0] != threshold
                or not torch.equal(torch.from_numpy(got[1]), expected)
            ):
                return False
    return True
