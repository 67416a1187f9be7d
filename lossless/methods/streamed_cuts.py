"""The magnitude cuts of a task vector seen block by block: TIES's top-k, breadcrumbs' band.

A TIES task vector whose bits and an index per entry fit the replay's memory is gathered once
and cut as a whole tensor's is (top_cut.replay_bits_first). Otherwise the cut value and the
counts beyond and at it come from a radix select (radix.py: one pass for bf16, two for
float32). When every entry tied at the cut is kept, the mask is `|delta| >= cut` (or `<=`).
When only some are, torch's sort order decides which: replay_stream.py replays it without holding the
task vector, in the memory it is given. A cut at 0 needs no replay for the top-k: a kept or
dropped ±0 entry multiplies to the same ±0, so keeping all of them changes no bit.

Only where the replay cannot be made (an inf or NaN magnitude, a torch whose sort order the
self-check does not recognise, the introsort's depth limit) is the whole task vector gathered
and decided by sparsify's whole-tensor code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lossless.methods import radix, replay_stream, sort_replay, sparsify
from lossless.methods.top_cut import (
    KINDS,
    TopCut,
    float_mask,
    ranking_magnitudes,
    replay_bits_first,
    replays_bits,
)

# (flat start, task-vector block) of one model, block by block in order
Deltas = Callable[[], Iterator[tuple[int, torch.Tensor]]]


@dataclass(frozen=True)
class TaskVector:
    """One model's task vector as the streamed merge can read it."""

    deltas: Deltas  # every block in order
    # |delta| of flat entries [lo, hi) in float32 (ranking_magnitudes' keys), recomputed from
    # the inputs
    magnitudes_at: Callable[[int, int], torch.Tensor]
    count: int
    chunk: int  # entries per read of a replay pass (whole rows)
    memory: int  # bytes the tie-order replay may hold
    step: int  # entries per block of `deltas` (whole rows)
    # the radix select's first pass made by the fused kernels (radix.kth_magnitude's
    # `high_pass`), or None where they do not cover the inputs
    high_pass: Callable[[torch.Tensor], bool | None] | None = None

    def magnitudes(self) -> Iterator[torch.Tensor]:
        for lo in range(0, self.count, self.step):
            yield self.magnitudes_at(lo, min(lo + self.step, self.count))

    def whole_magnitudes(self) -> torch.Tensor:
        """Every |delta| in one float32 tensor (the fallback's whole-tensor decision)."""
        out = torch.empty(self.count, dtype=torch.float32)
        for start, delta in self.deltas():
            out[start : start + delta.numel()] = delta.abs().reshape(-1)
        return out

    def keys(self, ascending: bool) -> replay_stream.Source:
        """The float32 magnitudes the sort ranks, negated for an ascending sort."""

        def read(lo: int, hi: int) -> np.ndarray:
            keys = self.magnitudes_at(lo, hi).numpy()
            return np.negative(keys, out=keys) if ascending else keys

        return replay_stream.Source(read, self.count, self.chunk)


def _beyond_or_at(value: float, largest: bool) -> sparsify.Selector:
    compare = torch.ge if largest else torch.le

    def select(block: torch.Tensor, start: int) -> torch.Tensor:
        mask = float_mask(block)
        return compare(ranking_magnitudes(block), value, out=mask)

    return select


def _first(
    vector: TaskVector, k: int, largest: bool, zero_cut_keeps_all: bool
) -> sparsify.Selector | None:
    """The first k (0 < k < count) of a descending (`largest`) or ascending sort of |delta|,
    as torch's CPU sort orders them; None where only the whole tensor can decide."""
    rank = radix.kth_magnitude(vector.magnitudes, k, largest=largest, high_pass=vector.high_pass)
    if rank.all_tied_kept(k) or (zero_cut_keeps_all and rank.value == 0):
        return _beyond_or_at(rank.value, largest)
    if not rank.finite or not sort_replay.replay_agrees():
        return None
    threshold = rank.value if largest else -rank.value
    tied = replay_stream.replay_top_k(
        vector.keys(not largest),
        k,
        threshold,
        vector.memory,
        high_bits_only=largest and rank.high_bits_only,  # an ascending sort's keys are negated
    )
    if tied is None:
        return None
    return TopCut(rank.value, tied, ascending=not largest)


def _held_cut(vector: TaskVector, k: int, dtype: torch.dtype) -> TopCut | None:
    """The first k of a descending sort of |delta| as a whole tensor's cut makes them
    (top_cut.replay_bits_first), where the task vector's bits and an index an entry fit the
    replay's memory: one pass over the inputs and the compiled replay, in place of the radix
    select's two passes, the streamed replay's and its finish in numpy (a 28672 × 8192 MLP
    matrix of a 70B merge at --memory 4G: 2-5 s against 10-11 s, beside a second worker).
    None where it does not fit or cannot be made (a NaN, the depth limit, an uncompiled
    replay): the streamed cut decides."""
    index = np.dtype(sort_replay.index_type(vector.count)).itemsize
    if dtype not in KINDS or vector.count * (dtype.itemsize + index) > vector.memory:
        return None
    delta = torch.empty(vector.count, dtype=dtype)
    if not replays_bits(delta, k):  # asked before the pass over the inputs
        return None
    for start, block in vector.deltas():
        delta[start : start + block.numel()] = block.reshape(-1)
    return replay_bits_first(delta, k, scramble=True)


def _filled(value: float) -> sparsify.Selector:
    return lambda block, start: torch.full_like(block, value)


def top(vector: TaskVector, density: float, dtype: torch.dtype) -> sparsify.Kept:
    """TIES trim, as sparsify.top_magnitude: the `max(1, int(density·n))` largest |delta|."""
    if density <= 0 or vector.count == 0:
        return sparsify.KEEP_NONE
    keep = max(1, int(density * vector.count))
    if keep >= vector.count:
        return sparsify.Kept(lambda block, start: torch.ones_like(block), dtype)
    select: sparsify.Selector | None = _held_cut(vector, keep, dtype)
    if select is None:
        select = _first(vector, keep, largest=True, zero_cut_keeps_all=True)
    if select is None:
        magnitudes = vector.whole_magnitudes()
        select = sparsify.top_k_selector(magnitudes, keep, remake=vector.whole_magnitudes)
    return sparsify.Kept(select, dtype)


def middle(vector: TaskVector, density: float, gamma: float) -> sparsify.Kept:
    """Breadcrumbs, as sparsify.middle_magnitude: the places [smallest, smallest + keep) of an
    ascending sort, i.e. the first smallest + keep minus the first `smallest`."""
    count = vector.count
    keep = int(density * count)
    smallest = max(0, count - keep - int(gamma * count))
    selectors: list[sparsify.Selector] = []
    for end in (smallest + keep, smallest):
        if end <= 0 or end >= count:
            selectors.append(_filled(1.0 if end >= count else 0.0))
            continue
        # ±0 entries at a zero cut cannot be kept by one cut and not the other: no shortcut
        select = _first(vector, end, largest=False, zero_cut_keeps_all=False)
        if select is None:
            return sparsify.middle_magnitude(vector.whole_magnitudes(), density, gamma)
        selectors.append(select)
    if not keep:  # nothing kept: the whole-tensor code's all-zero mask
        return sparsify.Kept(lambda block, start: torch.zeros_like(block))
    first, second = selectors
    return sparsify.Kept(lambda block, start: first(block, start) - second(block, start))
