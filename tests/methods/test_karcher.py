"""karcher: the Riemannian mean of directions, scaled by the mean norm."""

from __future__ import annotations

import math

import torch

from tests.methods.helpers import merge, t


def test_one_model_is_that_model() -> None:
    x = t([1.0, -2.0], [0.5, 3.0])
    assert torch.equal(merge("karcher", [x]), x)


def test_orthogonal_vectors_meet_on_the_geodesic_midpoint() -> None:
    got = merge("karcher", [t(2.0, 0.0), t(0.0, 4.0)])  # mean norm 3
    torch.testing.assert_close(got, 3 * t(math.sqrt(0.5), math.sqrt(0.5)))


def test_three_directions_on_a_circle() -> None:
    # unit vectors at 0°, 30°, 90°: the Karcher mean on a circle is the mean angle, 40°
    angles = [0.0, 30.0, 90.0]
    units = [t(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in angles]
    got = merge("karcher", units, params={"max_iter": 50, "tol": 1e-7})
    torch.testing.assert_close(got, t(math.cos(math.radians(40)), math.sin(math.radians(40))))


def test_zero_model_counts_in_the_scale_not_the_direction() -> None:
    got = merge("karcher", [t(3.0, 0.0), t(0.0, 0.0)])
    torch.testing.assert_close(got, t(1.5, 0.0))
