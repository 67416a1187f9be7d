"""slerp and nuslerp: endpoints, known angles, colinear fallback."""

from __future__ import annotations

import math

import pytest
import torch

from tests.methods.helpers import merge, t

E1, E2 = t(1.0, 0.0), t(0.0, 1.0)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_slerp_endpoints(value: float) -> None:
    base, other = t([0.3, -1.0], [2.0, 0.5]), t([1.5, 0.2], [-0.4, 0.9])
    got = merge("slerp", [other], base, params={"t": value})
    torch.testing.assert_close(got, base if value == 0 else other)


@pytest.mark.parametrize(("value", "angle"), [(0.5, 45.0), (1 / 3, 30.0)])
def test_slerp_of_orthogonal_unit_vectors_follows_the_arc(value: float, angle: float) -> None:
    got = merge("slerp", [E2], E1, params={"t": value})
    rad = math.radians(angle)
    torch.testing.assert_close(got, t(math.cos(rad), math.sin(rad)))


def test_slerp_of_colinear_vectors_is_lerp() -> None:
    got = merge("slerp", [t(2.0, 4.0)], t(1.0, 2.0), params={"t": 0.25})
    torch.testing.assert_close(got, t(1.25, 2.5))


def test_nuslerp_t_from_weights_without_base() -> None:
    # weights 1 and 3 → t = 3/4 of the way from the first to the second: 67.5°
    got = merge("nuslerp", [E1, E2], model_params=[{"weight": 1.0}, {"weight": 3.0}])
    rad = math.radians(67.5)
    torch.testing.assert_close(got, t(math.cos(rad), math.sin(rad)))


def test_nuslerp_with_base_interpolates_task_vectors() -> None:
    base = t(10.0, -5.0)
    got = merge("nuslerp", [base + E1, base + E2], base, [{"weight": 1.0}, {"weight": 1.0}])
    torch.testing.assert_close(got, base + t(math.sqrt(0.5), math.sqrt(0.5)))


def test_nuslerp_rows_each_interpolated_and_zero_weight_sum_means_half() -> None:
    first = t([1.0, 0.0], [1.0, 0.0])
    second = t([0.0, 1.0], [3.0, 0.0])  # row 0 orthogonal, row 1 colinear → lerp
    weights = [{"weight": 2.0}, {"weight": -2.0}]  # sum 0 → t = 0.5
    got = merge("nuslerp", [first, second], None, weights, {"nuslerp_flatten": False})
    torch.testing.assert_close(got, t([math.sqrt(0.5), math.sqrt(0.5)], [2.0, 0.0]))
    # row_wise: vectors along dim 0 (columns): column 0 = [1,1] vs [0,3], column 1 = 0 vs [1,0]
    by_column = merge(
        "nuslerp",
        [first, second],
        None,
        weights,
        {"nuslerp_flatten": False, "nuslerp_row_wise": True},
    )
    flat = merge("nuslerp", [first, second], None, weights)
    assert not torch.allclose(by_column, got)
    assert not torch.allclose(flat, got)
