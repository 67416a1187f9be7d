"""multislerp: barycentric interpolation on the sphere."""

from __future__ import annotations

import math

import pytest
import torch

from lossless.errors import LosslessError
from tests.methods.helpers import merge, t

E1, E2 = t(1.0, 0.0), t(0.0, 1.0)
EQUAL = [{"weight": 1.0}, {"weight": 1.0}]


def test_one_model_is_returned() -> None:
    assert torch.equal(merge("multislerp", [E1], None, [{"weight": 0.3}]), E1)


def test_two_orthogonal_unit_vectors_meet_halfway() -> None:
    torch.testing.assert_close(
        merge("multislerp", [E1, E2], None, EQUAL), t(math.sqrt(0.5), math.sqrt(0.5))
    )


def test_base_is_the_origin_and_norm_is_the_weighted_mean_norm() -> None:
    base = t(5.0, 5.0)
    got = merge("multislerp", [base + 2 * E1, base + 2 * E2], base, EQUAL)
    torch.testing.assert_close(got, base + 2 * t(math.sqrt(0.5), math.sqrt(0.5)))


def test_two_antipodal_models_fall_back_to_weighted_lerp_three_raise() -> None:
    torch.testing.assert_close(merge("multislerp", [E1, -E1], None, EQUAL), t(0.0, 0.0))
    with pytest.raises(LosslessError, match="weight"):
        merge("multislerp", [E1, -E1, E1 * 0], None, [*EQUAL, {"weight": 1.0}])
