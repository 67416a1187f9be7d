"""sort_replay for a task vector too large to hold: the partitions replayed as views.

sort_replay finds which entries torch's CPU argsort puts first by replaying the introsort
partitions that hold position k, on the keys in memory (4 bytes a key, 4 an index). Here the
first partitions never hold the array. A partition is kept as what it did: its pivot, how many
left stops (key <= pivot) and right stops (key >= pivot) each block of its range holds, its swap
count and its cut. The range it leaves is a view: position i of it is position i (left part)
or cut + i (right part) of the range before, except at the swapped stops, where the j-th left
stop holds the j-th right stop counted from the end, and the other way round. So the view is
read front to back by reading the range before it front to back (its own positions) and back
to front (the partners of its stops) at once, and so on down to the task vector, recomputed
from the inputs block by block. Reading a view costs about one pass over the inputs, however
deep; a partition needs one to count its stops. Once a range fits the memory given, it is
read into arrays and sort_replay finishes in memory.

Positions are read in chunks of `Chunk`s (keys, ids) in the order read: ascending for a
forward stream, descending for a backward one. The per-block stop counts use a grid of GRID
positions from 0; position 0 (the pivot) is never a stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from lossless.methods import sort_replay
from lossless.methods.key_streams import EMPTY_IDS, Chunk, Level, Reader, Source, stops_only

__all__ = ["GRID", "Partition", "Source", "View", "replay_top_k"]

GRID = 1 << 16  # positions per block of the stop counts, and per chunk of a view


class Partition:
    """What one partition of `level` did, worked out by streaming it (positions [1, size) are
    scanned against the pivot, after the pivot swap)."""

    def __init__(self, level: Level) -> None:
        self.level = level
        size = level.size
        slots = (1, size // 2, size - 1)
        keys = [float(level.read(s, s + 1, patched=False)[0][0]) for s in slots]
        chosen = slots[sort_replay._median_slot(*keys)]
        first_key, first_id = level.read(0, 1, patched=False, ids=True)
        pivot_key, pivot_id = level.read(chosen, chosen + 1, patched=False, ids=True)
        assert first_id is not None and pivot_id is not None
        self.pivot, self.pivot_id = float(pivot_key[0]), int(pivot_id[0])
        level.patch = {
            0: (self.pivot, self.pivot_id),
            chosen: (float(first_key[0]), int(first_id[0])),
        }
        blocks = -(-size // GRID)
        self.le = np.zeros(blocks, dtype=np.int64)  # left stops per block
        self.ge = np.zeros(blocks, dtype=np.int64)  # right stops per block
        reader = Reader(level.patched(True, 0, ids=False), ids=False)
        for b in range(blocks):
            block, _ = reader.take(min(GRID, size - b * GRID))
            le, ge = block <= self.pivot, block >= self.pivot
            if b == 0:
                le[0] = ge[0] = False
            self.le[b], self.ge[b] = np.count_nonzero(le), np.count_nonzero(ge)
        self.left_before = np.concatenate(([0], np.cumsum(self.le)))  # left stops before block b
        # right stops in blocks >= b (so right_from[b + 1]: after block b)
        self.right_from = int(self.ge.sum()) - np.concatenate(([0], np.cumsum(self.ge)))
        self.swaps = self._swap_count()
        ends = [self._nth_left(self.swaps + 1)]
        if self.swaps:
            ends.append(self._nth_right(self.swaps))
        self.cut = min(e for e in ends if e is not None)

    def _block(self, b: int) -> np.ndarray:
        lo = b * GRID
        keys = self.level.read(lo, min(lo + GRID, self.level.size))[0]
        return keys

    def _swap_count(self) -> int:
        """As sort_replay_scans.swap_count: max over j of min(left stops <= j, right stops > j)."""
        before, after = self.left_before, self.right_from
        b = int(np.argmax(before[1:] >= after[1:]))
        keys = self._block(b)
        le, ge = keys <= self.pivot, keys >= self.pivot
        if b == 0:
            le[0] = ge[0] = False
        left = before[b] + np.cumsum(le)
        right = after[b] - np.cumsum(ge)
        return max(min(int(before[b]), int(after[b])), int(np.minimum(left, right).max()))

    def _nth_left(self, nth: int) -> int | None:
        """Position of the nth (1-based) left stop from the start."""
        b = int(np.searchsorted(self.left_before[1:], nth))
        if b >= self.le.size:
            return None
        keys = self._block(b)
        mask = keys <= self.pivot
        if b == 0:
            mask[0] = False
        return b * GRID + int(np.flatnonzero(mask)[nth - 1 - self.left_before[b]])

    def _nth_right(self, nth: int) -> int:
        """Position of the nth (1-based) right stop from the end."""
        # right stops after block b: right_from[b + 1], non-increasing in b
        b = int(np.flatnonzero(self.right_from[1:] < nth)[0])
        keys = self._block(b)
        mask = keys >= self.pivot
        if b == 0:
            mask[0] = False
        return b * GRID + int(np.flatnonzero(mask)[::-1][nth - 1 - self.right_from[b + 1]])

    # partner streams: the stops in the order the view's stops consume them
    def _block_of_left(self, j: int) -> int:
        return int(np.searchsorted(self.left_before[1:], j, side="right"))

    def _block_of_right(self, j: int) -> int:
        return int(np.flatnonzero(self.right_from[1:] <= j)[0])

    def leftstops_only(self, j: int, forward: bool, ids: bool) -> Reader:
        """Left stops from the j-th (0-based, from the start): ascending if `forward`, else
        descending (j, j − 1, ...)."""
        b = self._block_of_left(j)
        first = int(self.left_before[b])  # index of the block's first left stop
        skip = (j - first) if forward else (first + int(self.le[b]) - 1 - j)
        return self._stop_reader(b, forward, lambda k: k <= self.pivot, skip, ids)

    def rightstops_only(self, j: int, forward: bool, ids: bool) -> Reader:
        """Right stops from the j-th (0-based, from the end): ascending positions if `forward`
        (j, j − 1, ...), else descending (j, j + 1, ...)."""
        b = self._block_of_right(j)
        first_in_block = int(self.right_from[b + 1])  # index of the block's last right stop
        skip = (first_in_block + int(self.ge[b]) - 1 - j) if forward else (j - first_in_block)
        return self._stop_reader(b, forward, lambda k: k >= self.pivot, skip, ids)

    def _stop_reader(
        self,
        b: int,
        forward: bool,
        is_stop: Callable[[np.ndarray], np.ndarray],
        skip: int,
        ids: bool,
    ) -> Reader:
        start = b * GRID if forward else min((b + 1) * GRID, self.level.size) - 1
        stops = stops_only(self.level.patched(forward, start, ids), forward, start, is_stop)
        reader = Reader(stops, ids)
        reader.take(skip)
        return reader

    def picked(self) -> np.ndarray:
        """Ids of the left part's keys equal to the pivot (the pivot and the swapped-in right
        stops equal to it), for a replay that goes on in the right part."""
        keys, ids = self.rightstops_only(0, forward=False, ids=True).take(self.swaps)
        assert ids is not None
        return np.concatenate(([self.pivot_id], ids[keys == self.pivot]))


class View(Level):
    """The left ([0, cut)) or right ([cut, size)) part that a partition leaves."""

    def __init__(self, partition: Partition, left: bool) -> None:
        self.p, self.left, self.patch = partition, left, {}
        parent = partition.level.size
        self.offset = 0 if left else partition.cut
        self.size = partition.cut if left else parent - partition.cut

    def stream(self, forward: bool, start: int, ids: bool) -> Iterator[Chunk]:
        return self._forward(start, ids) if forward else self._backward(start, ids)

    def _is_stop(self, keys: np.ndarray) -> np.ndarray:
        return keys <= self.p.pivot if self.left else keys >= self.p.pivot

    def _forward(self, start: int, with_ids: bool) -> Iterator[Chunk]:
        p, parent = self.p, self.p.level
        q = start + self.offset  # the parent's position of `start`
        aligned = q // GRID * GRID
        source = Reader(parent.patched(True, aligned, with_ids), with_ids)
        before, _ = source.take(q - aligned)
        counted = int(np.count_nonzero(self._is_stop(before)[int(aligned == 0) :]))
        if self.left:  # left stops met next: j, j + 1, ...; partners right stops, descending
            j = int(p.left_before[aligned // GRID]) + counted
        else:  # right stops met next: j, j − 1, ...; partners left stops, descending
            j = int(p.right_from[aligned // GRID]) - counted - 1
        partner: Reader | None = None
        pos = start
        while pos < self.size:
            n = min((pos // GRID + 1) * GRID, self.size) - pos
            keys, ids = source.take(n)
            mask = self._is_stop(keys)
            if pos + self.offset == 0:
                mask[0] = False
            stops = np.flatnonzero(mask)
            if self.left:  # every left stop of [1, cut) is swapped: j < swaps
                swapped = stops
                if swapped.size and partner is None:
                    partner = p.rightstops_only(j, forward=False, ids=with_ids)
                j += int(stops.size)
            else:
                swapped = stops[max(0, min(stops.size, j - p.swaps + 1)) :]
                if swapped.size and partner is None:
                    partner = p.leftstops_only(min(j, p.swaps - 1), forward=False, ids=with_ids)
                j -= int(stops.size)
            _swap_in(keys, ids, swapped, partner)
            yield keys, ids
            pos += n

    def _backward(self, start: int, with_ids: bool) -> Iterator[Chunk]:
        p, parent = self.p, self.p.level
        q = start + self.offset
        block = q // GRID
        end = min((block + 1) * GRID, parent.size) - 1
        source = Reader(parent.patched(False, end, with_ids), with_ids)
        after, _ = source.take(end - q)  # positions (q, end]: none is position 0
        counted = int(np.count_nonzero(self._is_stop(after)))
        if self.left:  # left stops met next: j, j − 1, ...; partners right stops, ascending
            j = int(p.left_before[block + 1]) - counted - 1
        else:  # right stops met next: j, j + 1, ...; partners left stops, ascending
            j = int(p.right_from[block + 1]) + counted
        partner: Reader | None = None
        pos = start
        while pos >= 0:
            n = pos - pos // GRID * GRID + 1
            keys, ids = source.take(n)
            mask = self._is_stop(keys)
            if pos - n + 1 + self.offset == 0:
                mask[-1] = False
            stops = np.flatnonzero(mask)
            if self.left:
                swapped = stops
                if swapped.size and partner is None:
                    partner = p.rightstops_only(j, forward=True, ids=with_ids)
                j -= int(stops.size)
            else:
                swapped = stops[: max(0, min(stops.size, p.swaps - j))]
                if swapped.size and partner is None:
                    partner = p.leftstops_only(j, forward=True, ids=with_ids)
                j += int(stops.size)
            _swap_in(keys, ids, swapped, partner)
            yield keys, ids
            pos -= n


def replay_top_k(
    source: Source,
    k: int,
    threshold: float,
    memory: int,
    small: int = sort_replay.SMALL,
    *,
    high_bits_only: bool = False,
) -> np.ndarray | None:
    """The ids (sorted) of the keys equal to `threshold` (the k-th largest key, known from
    radix.py) among the first k of a descending `torch.argsort` of `source`'s keys (`small`:
    sort_replay's, e.g. 3 for torch.topk), holding about `memory` bytes of keys (4 a key) at
    most. None where sort_replay would give up.

    `high_bits_only`: every key is a non-negative float32 whose low 16 bits are zero (the
    magnitudes of a bf16 task vector: radix.Rank.high_bits_only). The range that fits is
    then held as the keys' high halves, 2 bytes a key: the same order, so the same steps, and
    a range twice as long fits, which spares a streamed partition and the deepest view."""
    level: Level = source
    depth = sort_replay.depth_limit(source.size)
    picked: list[np.ndarray] = []
    key_bytes = 2 if high_bits_only else 4
    while level.size > small and 0 < k < level.size:
        if level.size * key_bytes <= memory:
            break
        if depth == 0:
            return None
        depth -= 1
        partition = Partition(level)
        if k < partition.cut:
            level = View(partition, left=True)
        else:
            if partition.pivot == threshold:
                picked.append(partition.picked())
            level = View(partition, left=False)
            k -= partition.cut
    if k > 0:
        keys, tied = _gather(level, threshold, high_bits_only)
        held = _high_half(threshold) if high_bits_only else threshold
        replay = sort_replay.replay_top_k(keys, k, tied=(*tied, held), depth=depth, small=small)
        if replay is None:
            return None
        found, ids = replay
        assert found == held, (found, held)
        picked.append(ids)
    return np.sort(np.concatenate(picked).astype(np.int64)) if picked else EMPTY_IDS


def _high_halves(keys: np.ndarray) -> np.ndarray:
    """Float32 keys with no low bits as their high 16 bits (uint16): the same order."""
    return (keys.view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def _high_half(key: float) -> float:
    return float(_high_halves(np.array([key], dtype=np.float32))[0])


def _gather(
    level: Level, threshold: float, high_bits_only: bool = False
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The level's keys in one array (float32, or their high halves: `replay_top_k`), and the
    positions and ids of those equal to `threshold`."""
    keys = np.empty(level.size, dtype=np.uint16 if high_bits_only else np.float32)
    positions, ids = [], []
    pos = 0
    for chunk_keys, chunk_ids in level.stream(True, 0, ids=True):
        assert chunk_ids is not None
        keys[pos : pos + chunk_keys.size] = (
            _high_halves(chunk_keys) if high_bits_only else chunk_keys
        )
        at = np.flatnonzero(chunk_keys == threshold)
        positions.append(at + pos)
        ids.append(chunk_ids[at])
        pos += chunk_keys.size
    return keys, (np.concatenate(positions), np.concatenate(ids))


def _swap_in(
    keys: np.ndarray, ids: np.ndarray | None, swapped: np.ndarray, partner: Reader | None
) -> None:
    """Put the partner side's next stops (and their ids) at the `swapped` positions, in place."""
    if not swapped.size:
        return
    assert partner is not None
    partner_keys, partner_ids = partner.take(swapped.size)
    keys[swapped] = partner_keys
    if ids is not None:
        ids[swapped] = partner_ids
