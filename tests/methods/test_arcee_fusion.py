"""arcee_fusion: keep the changes whose importance passes median + 1.5·IQR."""

from __future__ import annotations

import torch

from tests.methods.helpers import merge


def test_only_the_outlier_change_is_taken() -> None:
    # 1-D: one KL factor for the whole tensor, so the fence is on |diff| itself.
    # |diff| sorted = 0.1 … 0.8, 5.0; quantile indices floor(q·8) = 2, 4, 6 → 0.3, 0.5, 0.7;
    # fence 0.5 + 1.5·0.4 = 1.1 → only the 5.0 change passes.
    base = torch.zeros(9)
    diff = torch.tensor([0.3, -0.1, 5.0, 0.2, -0.8, 0.4, 0.6, -0.5, 0.7])
    got = merge("arcee_fusion", [base + diff], base)
    assert torch.equal(got, torch.where(diff == 5.0, diff, 0.0))


def test_large_tensors_sample_quantiles_with_the_generator() -> None:
    base = torch.zeros(1_000_001)
    other = torch.randn(1_000_001, generator=torch.Generator().manual_seed(0))
    first = merge("arcee_fusion", [other], base, seed=1)
    assert torch.equal(first, merge("arcee_fusion", [other], base, seed=1))
    kept = (first != 0).float().mean().item()
    assert 0.0 < kept < 0.2  # an outlier fence keeps a small share
