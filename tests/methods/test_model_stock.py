"""model_stock: t = k·cos / (1 + (k−1)·cos) between the fine-tunes' average and the base."""

from __future__ import annotations

import math

import torch

from tests.methods.helpers import merge, t

BASE = t([1.0, 2.0], [3.0, 4.0])


def test_identical_fine_tunes_are_returned() -> None:
    tuned = BASE + t([0.5, -1.0], [0.25, 2.0])
    torch.testing.assert_close(merge("model_stock", [tuned, tuned.clone()], BASE), tuned)


def test_orthogonal_fine_tunes_give_the_base() -> None:
    got = merge("model_stock", [BASE + t([1.0, 0], [0, 0]), BASE + t([0, 1.0], [0, 0])], BASE)
    torch.testing.assert_close(got, BASE)


def test_45_degree_fine_tunes() -> None:
    a, b = t([1.0, 0.0], [0.0, 0.0]), t([1.0, 1.0], [0.0, 0.0])
    cos = 1 / math.sqrt(2)
    ratio = 2 * cos / (1 + cos)
    expected = BASE + ratio * (a + b) / 2
    torch.testing.assert_close(merge("model_stock", [BASE + a, BASE + b], BASE), expected)


def test_filter_wise_takes_one_ratio_per_row() -> None:
    # row 0: identical offsets → ratio 1 (average); row 1: orthogonal → ratio 0 (base)
    a, b = t([1.0, 2.0], [1.0, 0.0]), t([1.0, 2.0], [0.0, 1.0])
    got = merge("model_stock", [BASE + a, BASE + b], BASE, params={"filter_wise": True})
    torch.testing.assert_close(got, BASE + t([1.0, 2.0], [0.0, 0.0]))
