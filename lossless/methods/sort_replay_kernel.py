"""The tie-order replay of methods/sort_replay.py, compiled: libstdc++'s partition steps run
literally, moving each key with its original index, on the range that holds position k.

Why compiled: in numpy the replay counts and gathers stops over 64K blocks, about twenty
calls a block that take the GIL again each time, so beside a second merge thread it ran
40-45 % slower; here each partition runs outside the GIL (numba, nogil), its stops found
64 keys at a time as the bits of a mask (`_partition`). It
moves the keys the way the sort does (the numpy replay only follows where they go), so it
holds every key's index (4 bytes a key, as the numpy replay's first step may). Only the
in-memory replay (`tied` None) runs here; replay_agrees() still checks it against
torch.argsort once per process (once per torch installation for the merges without torch:
replay_trust.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossless.methods.jit import numba, trailing_zeros

BLOCK = 64  # keys a scan classifies at a time: one bit each in a 64-bit mask
_ONE = np.uint64(1)


@numba.njit(inline="always")
def _swap(keys: Any, ids: Any, i: Any, j: Any) -> None:  # positions: signed or unsigned
    keys[i], keys[j] = keys[j], keys[i]
    ids[i], ids[j] = ids[j], ids[i]


@numba.njit(inline="always")
def _stops(block: Any, pivot: Any, left: bool) -> Any:
    """Bit t set where the scan stops at the t-th key it meets in `block`: a left scan meets
    it from the front and stops at key <= pivot, a right scan from the back at key >= pivot.
    One compare per key and no branch, so LLVM makes it a few vector compares."""
    mask = np.uint64(0)
    for t in range(BLOCK):
        stop = block[t] <= pivot if left else block[BLOCK - 1 - t] >= pivot
        mask |= np.uint64(stop) << np.uint64(t)
    return mask


@numba.njit(nogil=True, cache=True)
def _partition(keys: Any, ids: Any, lo: int, hi: int) -> int:
    """libstdc++'s `__unguarded_partition` of [lo + 1, hi) around the pivot at `lo` (left scan
    stops at key <= pivot, right scan at key >= pivot, `comp = a > b`): the same swaps in the
    same order, so the same arrangement; returns where the left scan ends (the cut).

    Hoare's loop swaps the i-th left stop with the i-th right stop (counted from the end)
    until they cross. While BLOCK keys remain unscanned on each side, a block's stops are
    found at once, as the set bits of a mask (`_stops`), and paired lowest bit first (count
    trailing zeros, clear the lowest bit); the scalar loop, resumed after the last swap,
    finishes the middle. A scan one key at a time branches at every key, which a CPU cannot
    predict on random keys; gathering each stop's offset without a branch (BlockQuicksort's
    trick, before the masks) still stored a byte per key. The positions are unsigned, so no
    access pays numba's check for a negative index.
    """
    pivot = keys[lo]
    left, right = lo + 1, hi - 1  # the next key each scan reads (right: inclusive)
    left_mask = right_mask = np.uint64(0)  # the stops of each side's block not yet swapped
    left_block = right_block = np.uint64(0)  # the left block's first key, the right's last
    swapped_left, swapped_right = np.int64(lo), np.int64(hi)  # the last pair swapped (none yet)
    while True:
        if left_mask == 0:
            if left + BLOCK - 1 > right:
                break
            left_mask = _stops(keys[left : left + BLOCK], pivot, True)
            left_block = np.uint64(left)
            left += BLOCK
        if right_mask == 0:
            if right - BLOCK + 1 < left:
                break
            right_mask = _stops(keys[right - BLOCK + 1 : right + 1], pivot, False)
            right_block = np.uint64(right)
            right -= BLOCK
        while left_mask != 0 and right_mask != 0:
            i = left_block + np.uint64(trailing_zeros(left_mask))
            j = right_block - np.uint64(trailing_zeros(right_mask))
            _swap(keys, ids, i, j)
            swapped_left, swapped_right = np.int64(i), np.int64(j)
            left_mask &= left_mask - _ONE
            right_mask &= right_mask - _ONE
    # the scalar loop from just after the last swap (found, unswapped stops are met again)
    first, last = swapped_left + 1, swapped_right
    while True:
        while keys[first] > pivot:
            first += 1
        last -= 1
        while pivot > keys[last]:
            last -= 1
        if not first < last:
            return int(first)
        _swap(keys, ids, first, last)
        first += 1


@numba.njit(nogil=True, cache=True)
def replay(keys: Any, ids: Any, k: int, small: int, depth: int) -> Any:
    """(found, threshold, kept tied ids) of the first k of a descending sort of `keys`, whose
    original indices `ids` holds (both moved in place); found False at the depth limit.

    Each step is libstdc++'s `__unguarded_partition_pivot` with `comp = a > b`: the median of
    the second, middle and last keys (by `__move_median_to_first`'s branches) swapped to the
    front, then Hoare's scans (`_partition`). Ranges of
    `small` keys or fewer wait for the final insertion sort, which is stable.
    """
    lo, hi = 0, keys.size
    pivot = keys[0]  # any key of this type: set by the first partition or the insertion sort
    while hi - lo > small and lo < k < hi:
        if depth == 0:
            return False, pivot, np.empty(0, dtype=np.int64)
        depth -= 1
        first, mid, last = lo + 1, lo + (hi - lo) // 2, hi - 1
        a, b, c = keys[first], keys[mid], keys[last]
        if a > b:
            chosen = mid if b > c else (last if a > c else first)
        elif a > c:
            chosen = first
        else:
            chosen = last if b > c else mid
        _swap(keys, ids, lo, chosen)
        pivot = keys[lo]
        left = _partition(keys, ids, lo, hi)
        if k < left:
            hi = left
        else:
            lo = left
    if k > lo:  # the final insertion sort of [lo, hi), stable: equal keys keep their order
        for i in range(lo + 1, hi):
            key, index, j = keys[i], ids[i], i
            while j > lo and key > keys[j - 1]:
                keys[j], ids[j] = keys[j - 1], ids[j - 1]
                j -= 1
            keys[j], ids[j] = key, index
        pivot = keys[k - 1]
    # else k is a partition cut: the last left part ends with its pivot, the k-th key
    # every key before position k is kept; those equal to the threshold are the tied ones
    count = 0
    for p in range(k):
        count += keys[p] == pivot
    tied = np.empty(count, dtype=np.int64)
    count = 0
    for p in range(k):
        if keys[p] == pivot:
            tied[count] = ids[p]
            count += 1
    tied.sort()
    return True, pivot, tied


@numba.njit(nogil=True, cache=True)
def replay_magnitudes(
    bits: Any, keys: Any, ids: Any, k: int, small: int, depth: int, unsigned: int, infinity: int
) -> Any:
    """`replay` on the magnitudes of floats given as their bits (bf16 as int16, float32 as
    int32), never made as floats: with the sign bit cleared (`& unsigned`), non-negative
    floats order as their bit patterns do, ties included. `keys` (may be `bits`
    itself) receives them, `ids` the indices. found False, before any partition, when a
    magnitude is NaN (its bits above `infinity`'s)."""
    nan = False
    for i in range(bits.size):
        magnitude = bits[i] & unsigned
        keys[i] = magnitude
        ids[i] = i
        nan |= magnitude > infinity
    if nan:
        return False, keys[0], np.empty(0, dtype=np.int64)
    return replay(keys, ids, k, small, depth)


# a float's magnitude in its bits, by the integer type that holds them (bf16 as int16, float32
# as int32): every bit but the sign, and +inf's bits (any above are NaN)
MAGNITUDE_BITS = {
    np.dtype(np.int16): (0x7FFF, 0x7F80),
    np.dtype(np.int32): (0x7FFFFFFF, 0x7F800000),
}


def cut_of_magnitudes(
    bits: np.ndarray, keys: np.ndarray, k: int, ids: np.ndarray | None = None
) -> tuple[float, np.ndarray] | None:
    """`replay_magnitudes` with libstdc++'s constants: (the k-th largest magnitude as a float,
    the kept entries tied at it), or None at a NaN or the depth limit. `ids` (an index per
    key; made if not given) may be reused across calls."""
    from lossless.methods import sort_replay

    if ids is None:
        ids = np.empty(bits.size, dtype=sort_replay.index_type(bits.size))
    unsigned, infinity = MAGNITUDE_BITS[bits.dtype]
    depth = sort_replay.depth_limit(bits.size)
    found, threshold, tied = replay_magnitudes(
        bits, keys, ids, k, sort_replay.SMALL, depth, unsigned, infinity
    )
    if not found:
        return None
    wide = int(threshold) << 16 if bits.dtype == np.int16 else int(threshold)
    return float(np.array(wide, dtype=np.uint32).view(np.float32)[()]), tied
