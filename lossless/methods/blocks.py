"""Block-wise iteration for the elementwise merge math (linear, the TIES family).

Working a block at a time keeps every temporary in cache and avoids whole-tensor float32 copies
of the inputs. The block is a power of two: its boundaries then fall on the vector-chunk
boundaries of torch's loops and reductions, so each entry is computed from the same numbers in
the same order as on the whole tensor (tests/methods check this bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterator

BLOCK = 1 << 16  # entries per block


def block_slices(count: int) -> Iterator[slice]:
    """Consecutive slices of BLOCK entries covering range(count); the last may be shorter."""
    for start in range(0, count, BLOCK):
        yield slice(start, start + BLOCK)
