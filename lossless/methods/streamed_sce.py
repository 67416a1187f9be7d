"""sce over a tensor's row blocks (sce.py's chain), with the whole-tensor path's bits.

Passes over the inputs, each recomputing the task vectors block by block:
1. (select_topk < 1) count the entries of non-zero variance across models, then find the k-th
   largest variance by radix select (radix.py: float32 bit patterns, two passes);
2. sum each model's squares of its selected task vector (sce.Energy, as the whole path sums);
3. the merge, block by block.

Which entries tied at the k-th variance are kept, when not all are: torch.topk's choice. Where
topk runs std::nth_element (64·k > entries) that choice is replayed without holding the
variance (replay_stream.py with sort_replay.TOPK_SMALL). Where it runs std::partial_sort its
heap of k entries decides, which cannot be replayed short of holding that heap and running it
entry by entry; there, and for an inf or NaN variance or a failed self-check, the lowest-index
tied entries are kept instead (still exactly k), and `note` says so for the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lossless.methods import radix, replay_stream, sce, sort_replay

Selector = Callable[[torch.Tensor, int], torch.Tensor]  # (flat float32 keys, start) → bool


def stream_sce(
    rows: Any,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    blocks: list[tuple[int, int]],
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    replay_memory: int = 1 << 30,
    note: Callable[[str], None] | None = None,
) -> Iterator[torch.Tensor]:
    """The output row blocks of sce; `rows` as streamed.Rows, `blocks` 64K-aligned."""
    models = len(model_params)
    row = math.prod(rows.shape[1:])

    def deltas(lo: int, hi: int) -> torch.Tensor:
        base = rows.base(lo, hi).to(dtype)
        return torch.stack([rows.model(i, lo, hi).to(dtype) - base for i in range(models)])

    if models == 0:
        for lo, hi in blocks:
            yield rows.base(lo, hi).to(dtype).to(out_dtype)
        return
    fraction = float(params.get("select_topk", 1.0))
    select = None
    if fraction < 1:
        select = variance_selector(deltas, blocks, row, fraction, replay_memory, note)
    masking = sce.mask_dtype(params, dtype)

    def selected(lo: int, hi: int) -> torch.Tensor:
        block = deltas(lo, hi)
        if select is None:
            return block
        mask = select(variance_keys(block), lo * row).view(block.shape[1:]).to(masking)
        return block * mask.unsqueeze(0)

    energy = sce.Energy(models)
    for lo, hi in blocks:
        energy.add(selected(lo, hi))
    weights = energy.weights(dtype)
    for lo, hi in blocks:
        merged = sce.combine(selected(lo, hi), rows.base(lo, hi).to(dtype), weights)
        yield merged.to(out_dtype)


def variance_keys(deltas: torch.Tensor) -> torch.Tensor:
    """|variance across models| of a block, flat float32: the keys topk ranks (exactly)."""
    return torch.var(deltas, dim=0, unbiased=False).abs().reshape(-1).float()


def variance_selector(
    deltas: Callable[[int, int], torch.Tensor],
    blocks: list[tuple[int, int]],
    row: int,
    fraction: float,
    memory: int,
    note: Callable[[str], None] | None,
) -> Selector:
    """Which entries the variance selection keeps, decided in streaming passes."""

    def keys() -> Iterator[torch.Tensor]:  # on the host: the cut is decided there
        for lo, hi in blocks:
            yield variance_keys(deltas(lo, hi)).cpu()

    count = (blocks[-1][1] if blocks else 0) * row
    nonzero = sum(int(torch.count_nonzero(k)) for k in keys())
    keep = sce.keep_count(nonzero, fraction)
    if keep <= 0:
        return lambda k, start: torch.zeros(k.shape, dtype=torch.bool, device=k.device)
    rank = radix.kth_magnitude(keys, keep)
    cut = int(_bits(torch.tensor([rank.value], dtype=torch.float32)))
    if rank.all_tied_kept(keep):
        return lambda k, start: _bits(k) >= cut
    tied = None
    if rank.finite and sort_replay.topk_replays(count, keep) and sort_replay.topk_replay_agrees():

        def read(lo: int, hi: int) -> np.ndarray:
            first, last = lo // row, -(-hi // row)
            flat = variance_keys(deltas(first, last)).cpu()
            return flat[lo - first * row : hi - first * row].numpy().copy()

        chunk = max(1, 4 * replay_stream.GRID // row) * row
        source = replay_stream.Source(read, count, chunk)
        small = sort_replay.TOPK_SMALL
        tied = replay_stream.replay_top_k(source, keep, rank.value, memory, small=small)
    if tied is not None:
        return _with_tied(cut, tied)
    if note is not None:
        note(
            f"sce kept {keep - rank.beyond} of the {rank.equal} entries tied at the "
            "variance cut by lowest index, not as torch.topk would (only the whole "
            "tensor can replay it here): an unstreamed merge may pick other ones"
        )
    return _lowest_tied(keys, cut, keep - rank.beyond)


def _bits(keys: torch.Tensor) -> torch.Tensor:
    """Non-negative float32 keys as int32 bit patterns: the same order, NaN above inf."""
    return keys.contiguous().view(torch.int32)


def _lowest_tied(keys: Callable[[], Iterator[torch.Tensor]], cut: int, need: int) -> Selector:
    """Keys above the cut, and the first `need` (0 < need) of those whose bits equal it."""
    last, seen, start = -1, 0, 0
    for block in keys():
        at = torch.nonzero(_bits(block) == cut).view(-1)
        if seen + at.numel() >= need:
            last = start + int(at[need - seen - 1])
            break
        seen, start = seen + at.numel(), start + block.numel()

    def select(keys: torch.Tensor, start: int) -> torch.Tensor:
        bits = _bits(keys)
        mask = bits > cut
        if start <= last:
            tied = torch.nonzero(bits[: last - start + 1] == cut).view(-1)
            mask[tied] = True
        return mask

    return select


def _with_tied(cut: int, tied: np.ndarray) -> Selector:
    """Keys above the cut, and the tied ones at the sorted flat indices `tied`."""
    tied = np.sort(tied.astype(np.int64))

    def select(keys: torch.Tensor, start: int) -> torch.Tensor:
        mask = _bits(keys) > cut
        lo, hi = np.searchsorted(tied, [start, start + keys.numel()])
        if hi > lo:
            mask[torch.from_numpy(tied[lo:hi] - start).to(mask.device)] = True
        return mask

    return select
