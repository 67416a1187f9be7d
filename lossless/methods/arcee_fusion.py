"""Arcee Fusion: take the other model's change only where it is unusually important.

importance = |other − base| × KL(softmax(other) ‖ softmax(base)) per row (last dim); the
change is kept where importance ≥ median + 1.5·IQR of all importances (an outlier fence),
else the base value stays. Above QUANTILE_SAMPLE entries the quantiles are those of a random
sample (with replacement) of that many positions.

Streamed (`streamed_fence`, then `fuse` per block): importance is row-local, so a block's
rows get the whole tensor's bits: softmax works row by row, the other ops entry by entry, and a
row's sum never runs over threads (`importance`); tests/methods/test_streamed_columns.py checks
it across blocks and thread counts. The sample's positions are drawn by the same generator call
as the whole path's, and its values gathered block by block: memory of a block plus the sample
(QUANTILE_SAMPLE values and positions), not the tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

QUANTILE_SAMPLE = 1_000_000  # more entries than this: quantiles of a random sample
# entries: a sum over fewer than torch's grain (32768) runs on one thread
SERIAL = 1 << 14
EPS = 1e-8
QUANTILES = (0.25, 0.5, 0.75)


def importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|other − base| × the row's KL divergence. A row's KL is summed SERIAL entries at a time:
    torch splits the one output of a one-row sum over threads (the bits then differ from the
    same row's in a taller tensor), and a block of one long row is what streaming gives."""
    if other.dim() == 0:
        return importance(other.reshape(1), base.reshape(1)).reshape(())
    p = torch.softmax(other, dim=-1) + EPS
    q = torch.softmax(base, dim=-1) + EPS
    kl = _kl_terms(p[..., :SERIAL], q[..., :SERIAL])
    for lo in range(SERIAL, p.shape[-1], SERIAL):
        kl = kl + _kl_terms(p[..., lo : lo + SERIAL], q[..., lo : lo + SERIAL])
    return (other - base).abs() * kl


def _kl_terms(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def outlier_fence(values: torch.Tensor) -> torch.Tensor:
    """median + 1.5·(q3 − q1), the quantiles the entries at floor(q·(n−1)) of the sorted values."""
    ordered, _ = torch.sort(values)
    q = torch.tensor(QUANTILES, device=ordered.device)
    q1, median, q3 = ordered[(q * (ordered.numel() - 1)).long()]
    return median + 1.5 * (q3 - q1)


def _draw(count: int, generator: torch.Generator | None) -> torch.Tensor:
    """The sample's positions, drawn on the host by the CPU generator whatever the device (so
    a GPU merge samples the same entries: merge/device.py)."""
    return torch.randint(count, (QUANTILE_SAMPLE,), generator=generator)


def fuse(other: torch.Tensor, base: torch.Tensor, fence: torch.Tensor) -> torch.Tensor:
    """The change kept where its importance reaches the fence; any block of rows."""
    mask = (importance(other, base) >= fence).float()
    return base + (other - base) * mask


def streamed_fence(
    read: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    blocks: Sequence[tuple[int, int]],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The whole tensor's fence from (other, base) rows read block by block (dim 0; blocks in
    order, covering the tensor): all importances up to QUANTILE_SAMPLE, else the whole path's
    sample, its positions drawn before any is gathered."""
    rows = blocks[-1][1] if blocks else 0
    sample = picks = order = None
    for lo, hi in blocks:
        values = importance(*read(lo, hi)).reshape(-1).cpu()  # the sample is kept on the host
        per_row = values.numel() // (hi - lo)
        if sample is None:  # the first block tells the entries per row
            count = rows * per_row
            if count > QUANTILE_SAMPLE:
                picks, order = torch.sort(_draw(count, generator))
            sample = torch.empty(min(count, QUANTILE_SAMPLE), dtype=values.dtype)
        start = lo * per_row
        if picks is None or order is None:
            sample[start : start + values.numel()] = values
            continue
        ends = torch.tensor([start, start + values.numel()])
        first, last = (int(i) for i in torch.searchsorted(picks, ends))
        sample[order[first:last]] = values[picks[first:last] - start]
    if sample is None:
        raise ValueError("arcee_fusion needs at least one row")
    return outlier_fence(sample)


def arcee_fusion(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic below 1M entries; above, the quantile sample uses `generator`.

    The mask is float32, so bf16/fp16 inputs give a float32 result (as in mergekit); the
    engine casts to the output dtype.
    """
    (other,) = tensors
    scores = importance(other, base)
    flat = scores.reshape(-1)
    if flat.numel() > QUANTILE_SAMPLE:
        flat = flat[_draw(flat.numel(), generator).to(flat.device)]
    mask = (scores >= outlier_fence(flat)).float()
    return base + (other - base) * mask
