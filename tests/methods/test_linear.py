"""linear and passthrough: closed-form values."""

from __future__ import annotations

import torch

from tests.methods.helpers import merge, t

A = t([1.0, -2.0, 0.5], [3.0, 0.0, -1.0])
B = t([0.0, 4.0, 2.5], [-1.0, 1.0, 1.0])


def test_weights_one_zero_give_the_first_model_exactly() -> None:
    got = merge("linear", [A, B], model_params=[{"weight": 1.0}, {"weight": 0.0}])
    assert torch.equal(got, A)


def test_normalised_and_raw_weighted_sum() -> None:
    weights = [{"weight": 1.0}, {"weight": 3.0}]
    torch.testing.assert_close(merge("linear", [A, B], model_params=weights), (A + 3 * B) / 4)
    raw = merge("linear", [A, B], model_params=weights, params={"normalize": False})
    torch.testing.assert_close(raw, A + 3 * B)


def test_bf16_inputs_accumulate_in_float32_and_return_bf16() -> None:
    # In bf16, 256 + 1 rounds back to 256 (8-bit mantissa), so a bf16 sum of [256, 1, 1] / 3
    # gives 85.5; in float32 it is 258 / 3 = 86, which bf16 holds exactly.
    inputs = [torch.tensor([v], dtype=torch.bfloat16) for v in (256.0, 1.0, 1.0)]
    got = merge("linear", inputs, model_params=[{"weight": 1.0}] * 3)
    assert got.dtype == torch.bfloat16
    assert got.item() == 86.0


def test_passthrough_is_byte_identical_and_scales() -> None:
    x = torch.randn(4, 5, dtype=torch.bfloat16)
    same = merge("passthrough", [x])
    assert same.dtype == x.dtype
    assert same.view(torch.int16).numpy().tobytes() == x.view(torch.int16).numpy().tobytes()
    torch.testing.assert_close(merge("passthrough", [A], model_params=[{"scale": 2.0}]), 2 * A)
