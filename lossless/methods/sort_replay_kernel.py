"""The tie-order replay of methods/sort_replay.py, compiled: libstdc++'s partition steps run
literally, moving each key with its original index, on the range that holds position k.

Why compiled: in numpy the replay counts and gathers stops over 64K blocks, about twenty
calls a block that take the GIL again each time, so beside a second merge thread it ran
40-45 % slower; here one scalar loop per partition runs outside the GIL (numba, nogil). It
moves the keys the way the sort does (the numpy replay only follows where they go), so it
holds every key's index (4 bytes a key, as the numpy replay's first step may). Only the
in-memory replay (`tied` None) runs here; replay_agrees() still checks it against
torch.argsort once per process.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(inline="always")
def _swap(keys: Any, ids: Any, i: int, j: int) -> None:
    keys[i], keys[j] = keys[j], keys[i]
    ids[i], ids[j] = ids[j], ids[i]


@numba.njit(nogil=True, cache=True)
def replay(keys: Any, ids: Any, k: int, small: int, depth: int) -> Any:
    """(found, threshold, kept tied ids) of the first k of a descending sort of `keys`, whose
    original indices `ids` holds (both moved in place); found False at the depth limit.

    Each step is libstdc++'s `__unguarded_partition_pivot` with `comp = a > b`: the median of
    the second, middle and last keys (by `__move_median_to_first`'s branches) swapped to the
    front, then Hoare's scans (left stops at key <= pivot, right at key >= pivot). Ranges of
    `small` keys or fewer wait for the final insertion sort, which is stable.
    """
    lo, hi = 0, keys.size
    pivot = np.float32(np.nan)
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
        left, right = lo + 1, hi
        while True:
            while keys[left] > pivot:
                left += 1
            right -= 1
            while pivot > keys[right]:
                right -= 1
            if not left < right:
                break
            _swap(keys, ids, left, right)
            left += 1
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
