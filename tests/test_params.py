"""mergekit's parameter values: scalars, gradients over a slice's layers, filter lists."""

from __future__ import annotations

import pytest

from lossless.errors import LosslessError
from lossless.merge.params import interpolate, layer_t, resolve, resolve_first

Q = "model.layers.0.self_attn.q_proj.weight"
UP = "model.layers.0.mlp.up_proj.weight"
NORM = "model.norm.weight"


def at_layers(value: object, n: int) -> list[object]:
    """The value at each layer of an n-layer slice, as the planner computes t."""
    return [resolve(value, tensor_name=Q, t=layer_t(i, n)) for i in range(n)]


def test_scalar_is_itself_at_every_layer() -> None:
    assert at_layers(0.3, 3) == [0.3, 0.3, 0.3]
    assert resolve(True, tensor_name=Q, t=0.5) is True


def test_two_point_gradient_over_three_layers() -> None:
    assert at_layers([0, 1], 3) == [0.0, 0.5, 1.0]


def test_three_point_gradient_over_five_layers() -> None:
    # t = 0, .25, .5, .75, 1 → scaled positions 0, .5, 1, 1.5, 2 on [0.2, 1.0, 0.4]
    values = at_layers([0.2, 1.0, 0.4], 5)
    assert values == pytest.approx([0.2, 0.6, 1.0, 0.7, 0.4], abs=1e-12)
    assert at_layers([0, 0.5, 1], 5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_one_layer_slice_takes_the_gradients_last_value() -> None:
    # mergekit 0.1.5 gives a one-layer slice t = 1 (plan_slice), not 0
    assert layer_t(0, 1) == 1.0
    assert at_layers([0.1, 0.9], 1) == [0.9]


def test_non_numeric_gradient_picks_without_interpolating() -> None:
    assert interpolate([True, False], 0.4) is True
    assert interpolate([True, False], 1.0) is False
    assert interpolate(["a", "b", "c"], 0.7) == "b"  # int(0.7 * 2) = 1


def test_filter_list_first_match_wins_and_default_last() -> None:
    value = [
        {"filter": "self_attn", "value": 0.1},
        {"filter": "mlp", "value": 0.2},
        {"value": 0.5},
    ]
    assert resolve(value, tensor_name=Q, t=0) == 0.1
    assert resolve(value, tensor_name=UP, t=0) == 0.2
    assert resolve(value, tensor_name=NORM, t=0) == 0.5


def test_filter_order_beats_specificity() -> None:
    value = [{"filter": "layers.0", "value": 1}, {"filter": "q_proj", "value": 2}]
    assert resolve(value, tensor_name=Q, t=0) == 1


def test_star_filter_matches_everything_and_filter_values_may_be_gradients() -> None:
    value = [{"filter": "mlp", "value": [0, 1]}, {"filter": "*", "value": [1, 3]}]
    assert resolve(value, tensor_name=UP, t=0.25) == 0.25
    assert resolve(value, tensor_name=Q, t=0.5) == 2.0


def test_lone_filter_mapping_is_a_one_entry_list() -> None:
    assert resolve({"filter": "mlp", "value": 7}, tensor_name=UP, t=0) == 7
    assert resolve({"filter": "mlp", "value": 7}, tensor_name=Q, t=0) is None


def test_unmatched_filter_falls_through_to_the_next_level() -> None:
    source = {"weight": [{"filter": "mlp", "value": 0.9}]}
    top = {"weight": 0.4}
    assert resolve_first([source, None, top], "weight", tensor_name=UP, t=0) == 0.9
    assert resolve_first([source, None, top], "weight", tensor_name=Q, t=0) == 0.4
    assert resolve_first([source], "density", tensor_name=Q, t=0) is None


def test_most_specific_level_wins() -> None:
    levels = [{"weight": 1.0}, {"weight": 2.0}, {"weight": 3.0, "density": 0.5}, {"density": 0.1}]
    assert resolve_first(levels, "weight", tensor_name=Q, t=0) == 1.0
    assert resolve_first(levels[1:], "weight", tensor_name=Q, t=0) == 2.0
    assert resolve_first(levels, "density", tensor_name=Q, t=0) == 0.5


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(LosslessError, match="mixes scalars and filters"):
        resolve([0.1, {"filter": "mlp", "value": 1}], tensor_name=Q, t=0)
    with pytest.raises(LosslessError, match="not a scalar"):
        resolve(None, tensor_name=Q, t=0)
