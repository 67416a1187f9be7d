"""karcher and multislerp over row blocks: coefficients from a Gram pass, the same bits as whole."""

from __future__ import annotations

import math

import pytest
import torch

from lossless.errors import LosslessError
from lossless.methods import karcher, multislerp, streamed
from lossless.methods.blocks import Gram, gram_of
from lossless.methods.table import METHODS
from tests.methods.test_streamed import MemoryRows, _smooth, streamed_bf16


def _near(of: torch.Tensor) -> torch.Tensor:
    """`of` with a few entries one bf16 step away: θ ≈ 1e-5, the iteration's tolerance."""
    near = of.clone()
    near.view(torch.int16)[0, :4] += 1
    return near


def _inputs(case: str) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    if case == "two":
        return [_smooth(1), _smooth(2)], None
    if case == "three":
        return [_smooth(1), _smooth(2), _smooth(3)], None
    if case == "zero model":
        return [_smooth(1), torch.zeros_like(_smooth(0)), _smooth(3)], None
    if case == "near colinear":
        first = _smooth(1)  # with 2·first (colinear, exact in bf16) and first one step away
        return [first, (first.float() * 2).bfloat16(), _near(first)], None
    if case == "base":
        return [_smooth(1), _smooth(2), _smooth(3)], _smooth(0)
    if case == "antipodal":
        return [_smooth(1), -_smooth(1)], None
    raise ValueError(case)


CASES = [
    ("karcher", "two", [{}] * 2, {}),
    ("karcher", "three", [{}] * 3, {"max_iter": 20, "tol": 1e-7}),
    ("karcher", "zero model", [{}] * 3, {}),
    ("karcher", "near colinear", [{}] * 3, {}),
    ("multislerp", "three", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {}),
    ("multislerp", "base", [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}], {}),
    (
        "multislerp",
        "base",
        [{"weight": 0.4}, {"weight": 1.5}, {"weight": 0.3}],
        {"normalize_weights": False},
    ),
    ("multislerp", "antipodal", [{"weight": 1.0}, {"weight": 1.0}], {}),
]


@pytest.mark.parametrize(("method", "case", "model_params", "params"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_equals_whole_bit_for_bit(method, case, model_params, params, dtype) -> None:
    models, base = _inputs(case)
    cast = [m.to(dtype) for m in models]
    whole = METHODS[method].load()(
        cast, None if base is None else base.to(dtype), model_params, params
    )
    assert whole.dtype == dtype
    whole = whole.to(torch.bfloat16)
    assert not torch.equal(whole, models[0])  # the merge did something
    for block_rows in (16, 32):  # one 64K block; two, the tensor ending mid-block
        got = streamed_bf16(method, models, base, model_params, params, dtype, block_rows)
        assert torch.equal(got, whole), (method, case, block_rows)


def _gram(*vectors: torch.Tensor) -> Gram:
    gram = Gram(len(vectors))
    gram.add([v.double() for v in vectors])
    return gram


def test_karcher_of_orthogonal_vectors_is_the_midpoint_at_the_mean_norm() -> None:
    # x₁ = (2, 0), x₂ = (0, 4): direction (1, 1)/√2, scale (2 + 4)/2 = 3 → 3/√2·(1, 1)
    c = karcher.karcher_coefficients(
        _gram(torch.tensor([2.0, 0]), torch.tensor([0, 4.0])), [0.5, 0.5], 10, 1e-9
    )
    assert c == pytest.approx([3 / math.sqrt(2) / 2, 3 / math.sqrt(2) / 4], rel=1e-12)


def _direction(degrees: float) -> torch.Tensor:
    radians = math.radians(degrees)
    return torch.tensor([math.cos(radians), math.sin(radians)], dtype=torch.float64)


def test_karcher_of_three_directions_on_a_circle_is_the_mean_angle() -> None:
    # directions 0°, 30°, 90° with lengths 1, 2, 3: on a circle the mean angle, 40°; scale 2
    xs = [length * _direction(angle) for length, angle in ((1, 0), (2, 30), (3, 90))]
    c = karcher.karcher_coefficients(_gram(*xs), [1 / 3] * 3, 100, 1e-12)
    assert c is not None
    got = sum(ci * x for ci, x in zip(c, xs, strict=True))
    torch.testing.assert_close(got, 2 * _direction(40), rtol=0, atol=1e-12)


def test_karcher_zero_and_tiny_models_count_only_in_the_scale() -> None:
    c = karcher.karcher_coefficients(
        _gram(torch.tensor([3.0, 0]), torch.zeros(2)), [0.5, 0.5], 10, 1e-5
    )
    assert c == [0.5, 0.0]  # 1.5·(1, 0) = 0.5·x₁
    assert karcher.karcher_coefficients(
        _gram(torch.zeros(2), torch.zeros(2)), [0.5, 0.5], 10, 1e-5
    ) == [0.0, 0.0]
    assert karcher.karcher_coefficients(Gram(1), [1.0], 10, 1e-5) is None  # the one model as is


def test_multislerp_coefficients_of_orthogonal_vectors() -> None:
    # x₁ = 2·e₁, x₂ = 2·e₂, equal weights: mean direction (1, 1)/√2, the tangent mean is 0,
    # scale 2 → √2·(1, 1) = (x₁ + x₂)/√2 (eps moves the coefficients by ~1e-8)
    gram = _gram(torch.tensor([2.0, 0]), torch.tensor([0, 2.0]))
    c = multislerp.multislerp_coefficients(gram, [1.0, 1.0], True, 1e-8)
    assert c == pytest.approx([1 / math.sqrt(2)] * 2, rel=1e-7)
    # unnormalised weights 1 and 3: the mean leans to x₂ by the weights (atan 3); the tangent
    # step then moves along the arc; scale 1·2 + 3·2 = 8
    c = multislerp.multislerp_coefficients(gram, [1.0, 3.0], False, 0.0)
    u = torch.tensor([1.0, 3.0], dtype=torch.float64) / math.sqrt(10)  # mean, over e₁, e₂
    tangent = torch.tensor([1.0, 0.0]) - u[0] * u + 3 * (torch.tensor([0.0, 1.0]) - u[1] * u)
    size = float(tangent.norm())
    point = u * math.cos(size) + tangent * math.sin(size) / size
    assert c == pytest.approx((8 * point / 2).tolist(), rel=1e-12)  # over x = 2·e


def test_multislerp_antipodal_two_lerp_more_raise() -> None:
    e = torch.tensor([1.0, 0.0])
    # equal weights cancel the directions: the weighted lerp, with normalised weights or not
    assert multislerp.multislerp_coefficients(_gram(e, -e), [2.0, 2.0], True, 1e-8) == [0.5, 0.5]
    assert multislerp.multislerp_coefficients(_gram(e, -e), [2.0, 2.0], False, 1e-8) == [2.0, 2.0]
    # weights 1 and 3: the mean direction is −e, both tangents 0, scale 1 → −e = 0.5·e + 1.5·(−e)
    c = multislerp.multislerp_coefficients(_gram(e, -e), [1.0, 3.0], True, 1e-8)
    assert c == pytest.approx([0.5, 1.5], rel=1e-12)
    with pytest.raises(LosslessError, match="weight"):
        multislerp.multislerp_coefficients(_gram(e, -e, 0 * e), [1.0, 1.0, 1.0], True, 1e-8)


@pytest.mark.parametrize("case", ["three", "base"])
def test_row_blocks_sum_the_same_gram_matrix_as_the_whole_tensor(case, monkeypatch) -> None:
    """The float64 dot products themselves are equal, not only the rounded outputs."""
    from lossless.methods import streamed_vectors

    models, base = _inputs(case)
    method = "multislerp" if base is not None else "karcher"
    module = {"karcher": karcher, "multislerp": multislerp}[method]
    cast = [m.float() for m in models]
    whole = gram_of(module.gram_vectors, cast, None if base is None else base.float())
    grams: list[Gram] = []
    real = streamed_vectors._gram
    monkeypatch.setattr(streamed_vectors, "_gram", lambda *a: grams.append(real(*a)) or grams[-1])
    model_params = [{"weight": 1.0}] * 3
    for block_rows in (16, 32):
        rows = MemoryRows(models, base)
        blocks = streamed.row_blocks(40, block_rows)
        parts = streamed_vectors.stream_vectors(
            method,
            rows,
            model_params,
            {},
            blocks=blocks,
            dtype=torch.float32,
            out_dtype=torch.float32,
        )
        list(parts)
        assert torch.equal(grams[-1].total, whole.total), block_rows
    assert len(grams) == 2
