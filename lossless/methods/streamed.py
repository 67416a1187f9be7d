"""Merge methods run over a tensor's rows, a block at a time: memory set by the block, not the
tensor (a 128256 × 8192 embedding need not be held whole, nor its float32 task vector).

The executor picks this path for a tensor too large for its memory budget. Each function takes
`Rows` (reads rows [lo, hi) of an input) and yields the output's row blocks in order. Blocks hold
a multiple of 64K entries (the last may be shorter), so the 64K-block math of linear.py and
task_arithmetic.py sees the same numbers in the same order: the bytes equal the whole-tensor path.

The TIES family needs decisions over the whole task vector first; each is made in streaming
passes that recompute `model − base` block by block from the inputs:
- top-k (ties) and the two cuts of breadcrumbs (streamed_cuts.py): the exact cut by radix
  select; which of the entries tied at it are kept, when not all are, by a replay of torch's
  sort order that holds no more than its memory (replay_stream.py).
- random drops (dare, della): the draws of model i start where model i−1's ended, so a first
  pass draws every model's mask in order (and sums the L1 norms when rescaling); the merge
  pass uses them packed 8 to a byte when they fit the memory it is given, or else draws them
  again from the generator's state noted before each model's first draw.
- the L1 rescale factor: sums per 64K block, as sparsify.L1 does for the whole tensor.
sce (its variance cut and energy weights) streams in streamed_sce.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from lossless.methods import (
    fused,
    replay_stream,
    sparsify,
    streamed_cuts,
    streamed_sce,
    streamed_vectors,
)
from lossless.methods.linear import linear
from lossless.methods.table import METHODS
from lossless.methods.task_arithmetic import Family, combine, task_vector
from lossless.methods.top_cut import ranking_magnitudes


class Rows(Protocol):
    """Row blocks of one job's inputs."""

    shape: tuple[int, ...]
    has_base: bool  # whether the job has a base model (`base` may be called)

    def model(self, i: int, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of input model i, in its stored dtype."""
        ...

    def base(self, lo: int, hi: int) -> torch.Tensor: ...


def stream(
    method: str,
    rows: Rows,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    block_rows: int,
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    generator: torch.Generator | None = None,
    replay_memory: int = 1 << 30,
    note: Callable[[str], None] | None = None,
) -> Iterator[torch.Tensor]:
    """The output row blocks of `method` (one whose MethodSpec says `streams`), in order.
    `replay_memory`: bytes a decision over a model's whole task vector may hold: a magnitude
    cut's tie-order replay (streamed_cuts.py), or a random drop's masks kept from its first
    pass (`_drawn`).
    `note`: told, once, when the bytes may differ from the whole-tensor path's (sce only)."""
    kwargs: dict[str, Any] = dict(
        block_rows=block_rows, dtype=dtype, out_dtype=out_dtype, generator=generator
    )
    if method == "linear":
        return stream_linear(rows, model_params, params, **kwargs)
    if method == "sce":
        blocks = row_blocks(rows.shape[0], block_rows)
        return streamed_sce.stream_sce(
            rows,
            model_params,
            params,
            blocks=blocks,
            dtype=dtype,
            out_dtype=out_dtype,
            replay_memory=replay_memory,
            note=note,
        )
    if method in streamed_vectors.STREAMED:
        blocks = row_blocks(rows.shape[0], block_rows)
        return streamed_vectors.stream_vectors(
            method,
            rows,
            model_params,
            params,
            blocks=blocks,
            dtype=dtype,
            out_dtype=out_dtype,
            generator=generator,
        )
    family = getattr(METHODS[method].load(), "family")  # noqa: B009 (set on the function object)
    return stream_task_arithmetic(
        family, rows, model_params, params, replay_memory=replay_memory, **kwargs
    )


def row_blocks(rows: int, block_rows: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + block_rows, rows)) for lo in range(0, rows, block_rows)]


def stream_linear(
    rows: Rows,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    block_rows: int,
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    count = len(model_params)
    for lo, hi in row_blocks(rows.shape[0], block_rows):
        inputs = [rows.model(i, lo, hi) for i in range(count)]
        yield linear(inputs, None, model_params, params, dtype=dtype, out_dtype=out_dtype)


def stream_task_arithmetic(
    family: Family,
    rows: Rows,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    block_rows: int,
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    generator: torch.Generator | None = None,
    replay_memory: int = 1 << 30,
) -> Iterator[torch.Tensor]:
    """The chain of task_arithmetic.merge_task_vectors over row blocks."""
    blocks = row_blocks(rows.shape[0], block_rows)
    row = math.prod(rows.shape[1:])
    rescale = bool(params.get("rescale", family.rescale))
    normalize = bool(params.get("normalize", family.normalize))
    models = len(model_params)

    count = math.prod(rows.shape)

    # The decisions (cuts, draws, L1 sums) are made on the host whatever the device: the same
    # entries and factors as a CPU merge (merge/device.py). `.cpu()` is a no-op on the CPU.
    def deltas(i: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(flat start, task-vector rows) of model i, block by block in order, on the host."""
        for lo, hi in blocks:
            yield lo * row, task_vector(rows.model(i, lo, hi), rows.base(lo, hi), dtype).cpu()

    def magnitudes(i: int, lo: int, hi: int) -> torch.Tensor:
        """|delta| of entries [lo, hi) of model i's flat task vector, in float32, from the
        rows holding them: one pass of the fused kernels where they cover the rows (on the
        CPU), else torch's task vector and magnitudes (the same bits)."""
        first, last = lo // row, -(-hi // row)
        model, base = rows.model(i, first, last), rows.base(first, last)
        keys = fused.magnitudes(model, base, dtype)
        if keys is None:
            keys = ranking_magnitudes(task_vector(model, base, dtype).cpu())
        return keys[lo - first * row : hi - first * row]

    def high_pass(i: int, high: torch.Tensor) -> bool | None:
        """Model i's magnitudes' high 16 bits counted into `high` by the fused kernels, block
        by block (radix.kth_magnitude's first pass); None where they do not cover the rows."""
        low_bits = False
        for n, (lo, hi) in enumerate(blocks):
            counted = fused.add_magnitude_histogram(
                rows.model(i, lo, hi), rows.base(lo, hi), dtype, high
            )
            if counted is None:
                assert n == 0  # every block's rows are of the same dtypes, on the same device
                return None
            low_bits = low_bits or counted
        return low_bits

    chunk = max(1, 4 * replay_stream.GRID // row) * row  # whole rows, ~256K entries a read
    vectors = [
        streamed_cuts.TaskVector(
            functools.partial(deltas, i),
            functools.partial(magnitudes, i),
            count,
            chunk,
            replay_memory,
            step=block_rows * row,
            high_pass=functools.partial(high_pass, i),
        )
        for i in range(models)
    ]
    # a random drop keeps every model's masks at once: each gets an equal part
    mask_memory = replay_memory // max(models, 1)
    deciders = [
        _decide(family.sparsifier, vectors[i], p, rescale, generator, dtype, mask_memory)
        for i, p in enumerate(model_params)
    ]
    for lo, hi in blocks:
        base = rows.base(lo, hi)
        inputs = [rows.model(i, lo, hi) for i in range(models)]
        start = lo * row
        kept = [d(inputs[i], base, start) for i, d in enumerate(deciders)]
        out = torch.empty(base.shape, dtype=out_dtype, device=base.device)
        if models == 0:
            out.copy_(base.to(dtype))
        else:
            sign = family.elect_sign
            combine(inputs, base, kept, model_params, params, sign, normalize, dtype, out, start)
        yield out


# (model rows, base rows, flat start of the block) → the Kept to apply to that block
Decider = Callable[[torch.Tensor, torch.Tensor, int], sparsify.Kept]
Deltas = streamed_cuts.Deltas


def _fixed(kept: sparsify.Kept) -> Decider:
    return lambda model, base, start: kept


def _decide(
    kind: str | None,
    vector: streamed_cuts.TaskVector,
    p: Mapping[str, Any],
    rescale: bool,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    mask_memory: int,
) -> Decider:
    deltas = vector.deltas
    density = float(p.get("density", 1.0))
    if kind is None or density >= 1:
        return _fixed(sparsify.KEEP_ALL)
    if kind == "top":
        kept = streamed_cuts.top(vector, density, dtype)
    elif kind == "outliers":
        kept = streamed_cuts.middle(vector, density, float(p.get("gamma", 0.01)))
    else:
        return _drawn(kind, vector, p, density, rescale, generator, dtype, mask_memory)
    return _fixed(_rescaled(deltas, kept, dtype) if rescale else kept)


def _rescaled(deltas: Deltas, kept: sparsify.Kept, dtype: torch.dtype) -> sparsify.Kept:
    """`kept` with the L1 factor summed over the streamed task vector (sparsify.with_rescale)."""
    if kept.select is None or kept.zero:
        return kept
    work = kept.work or dtype
    unscaled = sparsify.Kept(kept.select, kept.work)
    before, after = sparsify.L1(), sparsify.L1()
    for start, delta in deltas():
        original = delta.to(work).reshape(-1)
        before.add(original)
        after.add(unscaled.apply(original, start))
    return sparsify.rescaled(kept, before.total(work), after.total(work))


def _drawn(
    kind: str,
    vector: streamed_cuts.TaskVector,
    p: Mapping[str, Any],
    density: float,
    rescale: bool,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    memory: int,
) -> Decider:
    """dare / della: masks drawn block by block, in the order the whole tensor draws them.

    The first pass must draw every mask (model i's draws start where model i−1's ended). When
    the masks, packed 8 to a byte, fit `memory` (budget.drawn_mask_bytes), they are kept
    for the merge pass; otherwise that pass draws them again from the generator's state
    before the first, which costs della a second sort of every row."""
    epsilon = float(p.get("epsilon", 0.15))
    if kind == "rank_random":
        if density <= 0:
            return _fixed(sparsify.KEEP_NONE)
        sparsify.check_della(density, epsilon)
    if generator is None:
        raise ValueError("a streamed random drop needs a seeded generator to draw twice")
    work = sparsify.random_work_dtype(torch.empty(0, dtype=dtype))

    def draw(delta_rows: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        if kind == "random":
            probabilities = torch.full_like(delta_rows, density, dtype=work)
        else:
            probabilities = sparsify.rank_probabilities(delta_rows, density, epsilon, work)
        return torch.bernoulli(probabilities, generator=g).reshape(-1) != 0

    def block_kept(start: int, mask: torch.Tensor, factor: torch.Tensor | None) -> sparsify.Kept:
        return sparsify.Kept(lambda b, s: mask[s - start : s - start + b.numel()], work, factor)

    state = generator.get_state()
    kept: dict[int, tuple[np.ndarray, int]] | None = None
    if packed_mask_bytes(vector.count) <= memory:
        kept = {}
    # first pass: the draws in order, and the L1 sums when rescaling; the rows' shape matters
    # to della's per-row ranks
    before, after = sparsify.L1(), sparsify.L1()
    for start, delta in vector.deltas():
        mask = draw(delta, generator)
        if kept is not None:
            kept[start] = (np.packbits(mask.numpy()), mask.numel())
        if rescale:
            original = delta.to(work).reshape(-1)
            before.add(original)
            after.add(block_kept(start, mask, None).apply(original, start))
    factor = None
    if rescale:
        probe = sparsify.rescaled(
            sparsify.Kept(lambda b, s: b, work), before.total(work), after.total(work)
        )
        factor = probe.factor
    replay = torch.Generator().set_state(state)

    def decide(model: torch.Tensor, base: torch.Tensor, start: int) -> sparsify.Kept:
        if kept is not None:  # each block is merged once, in order: its mask is let go
            packed, entries = kept.pop(start)
            mask = torch.from_numpy(np.unpackbits(packed, count=entries).view(np.bool_))
            return block_kept(start, mask, factor)
        delta = task_vector(model, base, dtype).cpu()  # drawn on the host, as the first pass
        return block_kept(start, draw(delta, replay), factor)

    return decide


def packed_mask_bytes(entries: int) -> int:
    """Bytes one model's random-drop masks take packed 8 to a byte (a 64K-aligned block's
    mask packs into whole bytes; the last block rounds up)."""
    return -(-entries // 8)
