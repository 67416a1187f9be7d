"""The stops of Hoare's scans in one partition step of methods/sort_replay.py, a 64K block of
keys per numpy call: how many each block holds, how many swaps the partition makes, where the
n-th stop lies, and the swapped pairs in the order the scans meet them.

Why a module of their own: they are the replay's inner loop in numpy, each written so that no
call walks more than a block entry by entry; sort_replay.py keeps the step itself and which
original index each key holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

BLOCK = 1 << 16  # keys per numpy call: big enough to amortise the call, small enough for cache
SUB = 1 << 10  # keys per count when a partition's swap count is narrowed down inside a block


def block_counts(keys: np.ndarray, lo: int, hi: int, pivot: float) -> tuple[np.ndarray, ...]:
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
    stops = np.flatnonzero(block <= pivot if left else block >= pivot)
    stops += start
    return stops


def swap_count(
    keys: np.ndarray, lo: int, hi: int, pivot: float, le: np.ndarray, ge: np.ndarray
) -> int:
    """How many swaps Hoare's partition of keys[lo:hi] makes: the i-th left stop is swapped with
    the i-th right stop while it lies left of it, so the count is max over j of
    min(left stops in [lo, j], right stops in (j, hi)). That maximum is where the two counts
    cross: found block by block, then SUB entries by SUB entries inside the block, and only
    there entry by entry (a cumulative sum over SUB entries, not a whole block)."""
    before, after, b = _crossing(le, ge, 0, int(ge.sum()))
    start = lo + b * BLOCK
    block = keys[start : min(start + BLOCK, hi)]
    left_stops, right_stops = block <= pivot, block >= pivot
    edges = np.arange(0, block.size, SUB)
    before, after, c = _crossing(
        np.add.reduceat(left_stops, edges, dtype=np.int64),
        np.add.reduceat(right_stops, edges, dtype=np.int64),
        before,
        after,
    )
    part = slice(c * SUB, (c + 1) * SUB)
    left = before + np.cumsum(left_stops[part])
    right = after - np.cumsum(right_stops[part])
    return max(min(before, after), int(np.minimum(left, right).max()))


def _crossing(le: np.ndarray, ge: np.ndarray, before: int, after: int) -> tuple[int, int, int]:
    """The first of consecutive ranges (`le`/`ge` stops each) at whose end the left stops so
    far have caught up with the right stops still ahead, as (left stops before it, right stops
    from it on, its index); `before` and `after` count the stops outside these ranges."""
    before_le = before + np.concatenate(([0], np.cumsum(le)))
    after_ge = after - np.concatenate(([0], np.cumsum(ge)))
    i = int(np.argmax(before_le[1:] >= after_ge[1:]))
    return int(before_le[i]), int(after_ge[i]), i


def nth_stop(
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


def stop_stream(
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


def pairs(left: Iterator[np.ndarray], right: Iterator[np.ndarray]) -> Iterator[tuple[Any, Any]]:
    """Zip two streams of position chunks into equally long chunks (the swapped pairs)."""
    lbuf: np.ndarray | None = np.empty(0, dtype=np.int64)
    rbuf: np.ndarray | None = lbuf
    while True:
        if lbuf is not None and not lbuf.size:
            lbuf = next(left, None)
        if rbuf is not None and not rbuf.size:
            rbuf = next(right, None)
        if lbuf is None or rbuf is None:
            return
        n = min(lbuf.size, rbuf.size)
        yield lbuf[:n], rbuf[:n]
        lbuf, rbuf = lbuf[n:], rbuf[n:]
