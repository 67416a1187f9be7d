"""Block-wise iteration for the elementwise merge math (linear, the TIES family).

Working a block at a time keeps every temporary in cache and avoids whole-tensor float32 copies
of the inputs. The block is a power of two: its boundaries then fall on the vector-chunk
boundaries of torch's loops and reductions, so each entry is computed from the same numbers in
the same order as on the whole tensor (tests/methods check this bit for bit).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# whether the numba-compiled kernels run (fused.py, sort_replay_kernel.py): numba importable and
# LOSSLESS_FUSED not 0 (which runs torch's ops and numpy's replay, with the same bytes)
KERNELS = importlib.util.find_spec("numba") is not None and os.environ.get("LOSSLESS_FUSED") != "0"
BLOCK = 1 << 16  # entries per block
LANE = 1 << 12  # entries one thread sums in lane_sums: under torch's parallel grain (32768)


def row_alignment(shape: Sequence[int]) -> int:
    """The fewest rows whose entries are a whole number of 64K blocks (8192 columns → 8): a
    streamed tensor's blocks of rows are multiples of it (methods/streamed.py)."""
    row = math.prod(shape[1:])
    return BLOCK // math.gcd(row, BLOCK) if row else 1


def block_slices(count: int) -> Iterator[slice]:
    """Consecutive slices of BLOCK entries covering range(count); the last may be shorter."""
    for start in range(0, count, BLOCK):
        yield slice(start, start + BLOCK)


def lane_sums(x: Any) -> Any:
    """`x.sum(dim=-1)` with bits that do not depend on torch's thread count, which the budget
    changes (one worker gets every core; two get half each). torch splits a sum that has one
    output across threads, so a 64K block's sum differs between 1 and 2 threads (18 of 50
    random blocks here); a sum with several outputs is split by output, each summed whole by
    one thread. So the last dim is summed LANE entries at a time into several outputs, then
    those few partials serially. Half floats accumulate in float32 and round once, as torch's
    own sum does."""
    import torch

    accumulate = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
    n = x.shape[-1]
    whole = n - n % LANE
    parts = []
    if whole:
        lanes = x[..., :whole].reshape(*x.shape[:-1], whole // LANE, LANE)
        parts.append(lanes.sum(dim=-1, dtype=accumulate))
    if whole < n or not parts:
        parts.append(x[..., whole:].sum(dim=-1, keepdim=True, dtype=accumulate))
    return torch.cat(parts, dim=-1).sum(dim=-1).to(x.dtype)


class Gram:
    """Dot products of a few vectors summed block by block: each 64K block's products in
    float64, added in order. A tensor streamed in row blocks that start on block boundaries
    adds the same numbers in the same order as the whole tensor, so the scalars a method
    derives from them (norms, cosines) are the same floats whatever the memory budget."""

    def __init__(self, count: int) -> None:
        import torch

        self.total = torch.zeros(count, count, dtype=torch.float64)

    def add(self, vectors: list[Any]) -> None:
        """Add flat vectors (same length, starting on a block boundary of the tensor)."""
        import torch

        for part in block_slices(vectors[0].numel()):
            stacked = torch.stack([v[part].double() for v in vectors])
            for i in range(len(vectors)):
                self.total[i, i:] += lane_sums(stacked[i : i + 1] * stacked[i:]).cpu()

    def value(self, i: int, j: int) -> float:
        return float(self.total[min(i, j), max(i, j)])

    def matrix(self) -> Any:
        """The full symmetric matrix (float64), for quadratic forms c·G·c of combinations."""
        return self.total.triu() + self.total.triu(1).T


def gram_of(vectors: Callable[[list[Any], Any], list[Any]], tensors: list[Any], base: Any) -> Gram:
    """The Gram matrix of `vectors(tensors, base)` over whole tensors, made 64K entries at a
    time (so a float32 task vector is never held whole): the sums a row-block stream adds."""
    flat = [x.reshape(-1) for x in tensors]
    flat_base = None if base is None else base.reshape(-1)
    gram = Gram(len(tensors))
    for part in block_slices(flat[0].numel()):
        gram.add(vectors([x[part] for x in flat], None if flat_base is None else flat_base[part]))
    return gram


def combination(
    coefficients: Sequence[float], vectors: Sequence[Any], work: Any, origin: Any = None
) -> Any:
    """Σ cᵢ·(xᵢ − origin) in the `work` dtype (origin: a base in that dtype, or None), term by
    term in order: entry by entry, so any block of rows gets the whole tensor's bits. Holds
    the sum and one term beside the inputs."""
    import torch

    total = None
    for c, x in zip(coefficients, vectors, strict=True):
        term = x.to(work, copy=True)
        if origin is not None:
            term.sub_(origin)
        term.mul_(torch.tensor(c, dtype=work))
        total = term if total is None else total.add_(term)
    return total
