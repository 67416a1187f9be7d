"""The TIES trim applied in place (TopCut.zero_dropped) against multiplying by its mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossless.methods import task_arithmetic, top_cut


def tie_heavy_delta(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Deltas of few distinct magnitudes, both signs, some zeros: ties everywhere."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(-6, 7, (n,), generator=generator).to(dtype) / 8
    return values


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("start", [0, 1000])
def test_zeroing_in_place_keeps_what_the_mask_keeps(dtype: torch.dtype, start: int) -> None:
    delta = tie_heavy_delta(5000, dtype, seed=2)
    magnitudes = delta.abs().float()
    cut = top_cut.replay_first(magnitudes.clone(), 2100)
    assert cut is not None and cut.trims
    assert cut.tied.size > 0  # some entries equal to the threshold are kept, some dropped
    block = delta[start : start + 3000].clone()
    expected = block * cut.select(block, start)
    cut.zero_dropped(block, start)
    assert torch.equal(block, expected)
    # the same values; a dropped negative entry is +0 here and -0 from the mask
    dropped = expected == 0
    assert not torch.signbit(block[dropped]).any()
    assert torch.signbit(expected[dropped]).any()
    kept = int((block != 0).sum()) + int(((block == 0) & (cut.select(block, start) == 1)).sum())
    assert kept == int((cut.select(block, start) == 1).sum())


def test_only_a_descending_cut_at_a_finite_threshold_trims() -> None:
    tied = np.empty(0, dtype=np.int64)
    assert top_cut.TopCut(0.5, tied).trims
    assert not top_cut.TopCut(0.5, tied, ascending=True).trims
    assert not top_cut.TopCut(float("inf"), tied).trims


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("models", [1, 3, 6])
def test_the_sign_of_a_dropped_zero_never_reaches_the_merge(
    dtype: torch.dtype, models: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bases of -0 under entries every model drops (negative deltas): TIES gives the same bits
    with the in-place trim as with the mask multiply, float32 sums of more than 4 rows (torch's
    own sum) included."""
    shape = (64, 80)
    base = torch.full(shape, -0.0, dtype=dtype)
    base[::2] = tie_heavy_delta(shape[0] * shape[1] // 2, dtype, seed=9).view(32, 80)
    tensors = [
        base + tie_heavy_delta(base.numel(), dtype, seed=i).view(shape) for i in range(models)
    ]
    for tensor in tensors:  # in the -0 rows, negative deltas smaller than any the trim keeps
        tensor[1::2] = -1 / 64
    params = [{"weight": 1.0, "density": 0.4}] * models

    def merge() -> torch.Tensor:
        return task_arithmetic.ties(tensors, base, params, {"normalize": True}, dtype=dtype)

    trimmed = merge()
    monkeypatch.setattr(top_cut.TopCut, "trims", property(lambda self: False))
    masked = merge()
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    assert torch.equal(trimmed.view(bits), masked.view(bits))
    assert not masked[1::2].any()  # every model's delta there was dropped (-0 by the mask)
