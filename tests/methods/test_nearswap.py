"""nearswap: weight = clamp(t / |base − other|, 0, 1) per entry."""

from __future__ import annotations

import torch

from tests.methods.helpers import merge, t


def test_near_entries_swap_far_ones_move_by_t_over_distance() -> None:
    base, other = t(1.0, 0.0, -2.0), t(1.5, 0.05, 2.0)
    # distances 0.5, 0.05, 4 with t 0.1 → weights 0.2, 1, 0.025
    got = merge("nearswap", [other], base, params={"t": 0.1})
    torch.testing.assert_close(got, t(1.1, 0.05, -2.0 + 0.025 * 4))


def test_t_towards_zero_returns_the_base() -> None:
    base, other = t(1.0, 0.0, -2.0), t(1.5, 0.05, 2.0)
    torch.testing.assert_close(merge("nearswap", [other], base, params={"t": 1e-12}), base)
