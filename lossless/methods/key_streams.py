"""Keys of a task vector as streams: the levels replay_stream.py partitions and reads back.

A `Level` is an array of keys that is never held whole: it is streamed from any position,
forwards or backwards, in chunks of (keys, original ids). `Source` computes the task vector's
keys from the inputs; replay_stream.View is the level a partition of the one before leaves.
`Reader` takes a given number of entries at a time from such a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

# keys (float32) and their original indices (int64), or None where a pass only counts
Chunk = tuple[np.ndarray, np.ndarray | None]
EMPTY_KEYS = np.empty(0, dtype=np.float32)
EMPTY_IDS = np.empty(0, dtype=np.int64)


class Reader:
    """Takes `n` entries at a time from a stream of chunks, in the stream's order."""

    def __init__(self, chunks: Iterator[Chunk], ids: bool) -> None:
        self._chunks = chunks
        self._keys, self._ids = EMPTY_KEYS, (EMPTY_IDS if ids else None)

    def take(self, n: int) -> Chunk:
        keys, ids = [self._keys], [self._ids]
        have = self._keys.size
        while have < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            keys.append(chunk[0])
            ids.append(chunk[1])
            have += chunk[0].size
        if len(keys) > 1:
            self._keys = np.concatenate(keys)
            self._ids = None if self._ids is None else np.concatenate(ids)  # type: ignore[arg-type]
        out = self._keys[:n], None if self._ids is None else self._ids[:n]
        self._keys = self._keys[n:]
        self._ids = None if self._ids is None else self._ids[n:]
        return out


def _patched(chunks: Iterator[Chunk], forward: bool, start: int, patch: dict) -> Iterator[Chunk]:
    """The stream with the entries at `patch`'s positions replaced (a pivot swap)."""
    pos = start
    for keys, ids in chunks:
        n = keys.size
        for at, (key, index) in patch.items():
            offset = at - pos if forward else pos - at
            if 0 <= offset < n:
                keys[offset] = key
                if ids is not None:
                    ids[offset] = index
        pos += n if forward else -n
        yield keys, ids


def stops_only(
    chunks: Iterator[Chunk], forward: bool, start: int, is_stop: Callable[[np.ndarray], np.ndarray]
) -> Iterator[Chunk]:
    """Only the stops of the stream (position 0, the pivot, is none)."""
    pos = start
    for keys, ids in chunks:
        mask = is_stop(keys)
        n = keys.size
        if forward and pos == 0:
            mask[0] = False
        elif not forward and pos - n + 1 == 0:
            mask[-1] = False
        pos += n if forward else -n
        yield keys[mask], None if ids is None else ids[mask]


class Level:
    """An array of keys that can be streamed from any position, forwards or backwards, and
    partitioned once (`patch` then holds the pivot swap its partition starts with)."""

    size: int
    patch: dict[int, tuple[float, int]]

    def stream(self, forward: bool, start: int, ids: bool) -> Iterator[Chunk]:
        raise NotImplementedError

    def patched(self, forward: bool, start: int, ids: bool) -> Iterator[Chunk]:
        return _patched(self.stream(forward, start, ids), forward, start, self.patch)

    def read(self, lo: int, hi: int, *, patched: bool = True, ids: bool = False) -> Chunk:
        """Positions [lo, hi), ascending."""
        stream = self.patched(True, lo, ids) if patched else self.stream(True, lo, ids)
        return Reader(stream, ids).take(hi - lo)


class Source(Level):
    """The task vector's keys, computed by `read(lo, hi)` (a fresh float32 array) in chunks
    of `chunk` positions."""

    def __init__(self, read: Callable[[int, int], np.ndarray], size: int, chunk: int) -> None:
        self._read, self.size, self._chunk, self.patch = read, size, chunk, {}

    def stream(self, forward: bool, start: int, ids: bool) -> Iterator[Chunk]:
        step = self._chunk
        if forward:
            lo = start
            while lo < self.size:
                hi = min(self.size, (lo // step + 1) * step)
                yield self._read(lo, hi), np.arange(lo, hi, dtype=np.int64) if ids else None
                lo = hi
        else:
            hi = start + 1
            while hi > 0:
                lo = (hi - 1) // step * step
                index = np.arange(hi - 1, lo - 1, -1, dtype=np.int64) if ids else None
                yield self._read(lo, hi)[::-1], index
                hi = lo
