"""The task-arithmetic family: hand-computed TIES, sparsifiers, DARE/DELLA randomness."""

from __future__ import annotations

import pytest
import torch

from lossless.errors import LosslessError
from lossless.methods import sparsify
from tests.methods.helpers import merge, t

# Base 1 everywhere; task vectors A (weight 1) and B (weight 2), density 0.7 → keep int(4.2) = 4.
BASE = torch.ones(2, 3)
DELTA_A = t([1.0, -2.0, 3.0], [-4.0, 5.0, -6.0])  # keeps |3|,|4|,|5|,|6|
DELTA_B = t([-3.0, 1.0, 2.0], [2.2, -1.0, -2.5])  # keeps |3|,|2.5|,|2.2|,|2|
TIES_PARAMS = [{"weight": 1.0, "density": 0.7}, {"weight": 2.0, "density": 0.7}]


def _ties(**params: object) -> torch.Tensor:
    return merge("ties", [BASE + DELTA_A, BASE + DELTA_B], BASE, TIES_PARAMS, params)


def test_ties_hand_computed_sign_election_and_disjoint_mean() -> None:
    # weighted, trimmed: A' = [[0,0,3],[-4,5,-6]], 2·B' = [[-6,0,4],[4.4,0,-5]]
    # column sums [-6,0,7],[0.4,5,-11] elect signs [-,+,+],[+,+,-]; agreeing entries are
    # averaged by the sum of their weights: [-6/2, 0, (3+4)/3], [4.4/2, 5/1, (-6-5)/3]
    expected = t([-3.0, 0.0, 7 / 3], [2.2, 5.0, -11 / 3])
    torch.testing.assert_close(_ties(), BASE + expected)
    torch.testing.assert_close(_ties(normalize=False), BASE + t([-6.0, 0, 7], [4.4, 5, -11]))
    torch.testing.assert_close(_ties(**{"lambda": 0.5}), BASE + 0.5 * expected)


def test_int8_mask_changes_no_number() -> None:
    assert torch.equal(_ties(int8_mask=True), _ties())


def test_task_arithmetic_is_base_plus_weighted_sum_times_lambda() -> None:
    weights = [{"weight": 1.0}, {"weight": 2.0}]
    got = merge("task_arithmetic", [BASE + DELTA_A, BASE + DELTA_B], BASE, weights, {"lambda": 0.5})
    torch.testing.assert_close(got, BASE + 0.5 * (DELTA_A + 2 * DELTA_B))
    normed = merge(
        "task_arithmetic", [BASE + DELTA_A, BASE + DELTA_B], BASE, weights, {"normalize": True}
    )
    torch.testing.assert_close(normed, BASE + (DELTA_A + 2 * DELTA_B) / 3)


def test_no_models_but_the_base_gives_the_base() -> None:
    assert torch.equal(merge("ties", [], BASE, []), BASE)


@pytest.mark.parametrize(
    ("name", "linear"), [("dare_ties", "ties"), ("dare_linear", "task_arithmetic")]
)
def test_dare_with_density_one_equals_its_deterministic_twin(name: str, linear: str) -> None:
    weights = [{"weight": 1.0, "density": 1.0}, {"weight": 2.0, "density": 1.0}]
    models = [BASE + DELTA_A, BASE + DELTA_B]
    params = {"normalize": name == "dare_ties"}
    assert torch.equal(
        merge(name, models, BASE, weights, params, seed=3),
        merge(linear, models, BASE, weights, params),
    )


@pytest.mark.parametrize("name", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_same_seed_same_result_other_seed_other_result(name: str) -> None:
    base = torch.zeros(8, 8)
    models = [base + torch.randn(8, 8, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    weights = [{"weight": 1.0, "density": 0.5}] * 2
    first = merge(name, models, base, weights, seed=11)
    assert torch.equal(first, merge(name, models, base, weights, seed=11))
    assert not torch.equal(first, merge(name, models, base, weights, seed=12))


def test_dare_rescale_preserves_the_l1_norm_of_each_task_vector() -> None:
    delta = torch.arange(1.0, 21.0)
    kept = sparsify.keep_random(
        delta, 0.5, rescale=True, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(kept.abs().sum(), delta.abs().sum())
    factor = delta.abs().sum() / delta[kept != 0].abs().sum()  # not 1/density: the L1 ratio
    torch.testing.assert_close(kept[kept != 0], delta[kept != 0] * factor)


def test_top_magnitude_keeps_at_least_one_entry() -> None:
    delta = t(0.1, -0.5, 0.2)
    assert torch.equal(sparsify.keep_top_magnitude(delta, 0.01, rescale=False), t(0.0, -0.5, 0.0))
    assert torch.equal(sparsify.keep_top_magnitude(delta, 0.0, rescale=False), torch.zeros(3))


def test_breadcrumbs_cuts_outliers_then_small_values() -> None:
    delta = torch.tensor([5.0, -1.0, 9.0, 3.0, -10.0, 2.0, 7.0, -4.0, 8.0, 6.0])
    # density 0.5 → keep 5; gamma 0.2 → cut the 2 largest (10, 9); then the 3 smallest (1, 2, 3)
    kept = sparsify.keep_middle_magnitude(delta, 0.5, 0.2, rescale=False)
    assert torch.equal(kept, torch.tensor([5.0, 0, 0, 0, 0, 0, 7.0, -4.0, 8.0, 6.0]))
    # density 0.9 + gamma 0.2 > 1: the outlier cut shrinks to 1 so that 9 entries stay
    kept = sparsify.keep_middle_magnitude(delta, 0.9, 0.2, rescale=False)
    assert torch.equal(kept, torch.where(delta.abs() == 10, 0.0, delta))


def test_breadcrumbs_method_sums_the_cut_task_vectors() -> None:
    base = torch.zeros(10)
    delta = torch.tensor([5.0, -1.0, 9.0, 3.0, -10.0, 2.0, 7.0, -4.0, 8.0, 6.0])
    got = merge(
        "breadcrumbs", [base + delta], base, [{"weight": 2.0, "density": 0.5, "gamma": 0.2}]
    )
    torch.testing.assert_close(got, 2 * torch.tensor([5.0, 0, 0, 0, 0, 0, 7.0, -4.0, 8.0, 6.0]))


def test_della_keep_probability_rises_linearly_with_magnitude_rank() -> None:
    # every row ranks the same 5 magnitudes: keep probabilities 0.3, 0.4, 0.5, 0.6, 0.7
    rows = torch.tensor([[0.1, -0.5, 0.3, 0.2, -0.4]]).repeat(4000, 1)
    kept = sparsify.keep_random_by_rank(
        rows, 0.5, 0.2, rescale=False, generator=torch.Generator().manual_seed(0)
    )
    frequency = (kept != 0).float().mean(dim=0)
    torch.testing.assert_close(
        frequency, torch.tensor([0.3, 0.7, 0.5, 0.4, 0.6]), atol=0.03, rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 1), (5, 300), (2, 3000)])
def test_della_ranks_equal_mergekits_argsort_of_the_argsort_ties_included(
    dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    # magnitudes from 12 values, so most entries tie with others in their row; signs and -0.0
    # mixed in. mergekit: ranks = argsort(argsort(|delta|)) + 1, min and max taken per row.
    g = torch.Generator().manual_seed(3)
    values = torch.tensor([0.0, -0.0, 1e-3, 0.01, 0.02, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 250.0])
    delta = (
        values[torch.randint(0, 12, shape, generator=g)] * torch.randn(shape, generator=g).sign()
    )
    delta = delta.to(dtype)
    work = sparsify.random_work_dtype(delta)
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    ranks = torch.argsort(rows.abs(), dim=1).argsort(dim=1).to(work) + 1
    low = ranks.min(dim=1, keepdim=True).values
    high = ranks.max(dim=1, keepdim=True).values
    expected = (0.5 - 0.15) + ((ranks - low) / (high - low)).clamp(0, 1) * 2 * 0.15
    got = sparsify.rank_probabilities(delta, 0.5, 0.15, work)
    assert got.dtype == expected.dtype
    assert torch.equal(got.isnan(), expected.isnan())  # a row of one entry: 0 / 0, as mergekit
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())


def test_della_rejects_epsilon_that_leaves_the_unit_interval() -> None:
    with pytest.raises(LosslessError, match="epsilon"):
        merge("della", [torch.ones(3)], torch.zeros(3), [{"weight": 1.0, "density": 0.1}], seed=0)


# -- block by block versus whole tensors ---------------------------------------------------------


def _whole_tensor_chain(
    name: str,
    tensors: list[torch.Tensor],
    base: torch.Tensor,
    model_params: list[dict[str, float]],
    params: dict[str, object],
    seed: int,
) -> torch.Tensor:
    """An independent whole-tensor reference of ties / breadcrumbs_ties / dare_ties /
    task_arithmetic, computed as mergekit does: top-k and the breadcrumbs band by full sorts,
    DARE masks drawn for the whole tensor."""
    generator = torch.Generator().manual_seed(seed)
    deltas = []
    for tensor, p in zip(tensors, model_params, strict=True):
        delta = tensor - base
        if name == "ties":
            keep = max(1, int(p["density"] * delta.numel()))
            mask = torch.zeros(delta.numel(), dtype=delta.dtype)
            mask[torch.argsort(delta.abs().reshape(-1), descending=True)[:keep]] = 1
            delta = delta * mask.reshape(delta.shape)
        elif name == "breadcrumbs_ties":
            count = delta.numel()
            keep, outliers = int(p["density"] * count), int(p["gamma"] * count)
            smallest = max(0, count - keep - outliers)
            order = torch.sort(delta.abs().reshape(-1)).indices
            mask = torch.zeros(count, dtype=delta.dtype)
            mask[order[smallest : smallest + keep]] = 1
            delta = delta * mask.reshape(delta.shape)
        elif name == "dare_ties":
            mask = torch.bernoulli(torch.full_like(delta, p["density"]), generator=generator)
            masked = delta * mask
            delta = masked * (delta.abs().sum() / masked.abs().sum())
        deltas.append(delta)
    stacked = torch.stack(deltas)
    weights = torch.tensor([p["weight"] for p in model_params]).view(-1, *[1] * base.dim())
    weighted = stacked * weights
    if name == "task_arithmetic":
        merged = weighted.sum(dim=0)
        if params.get("normalize", False):
            divisor = weights.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
            merged = merged / divisor
    else:
        signs = weighted.sign()
        agree = signs == (weighted.sum(dim=0) >= 0).float() * 2 - 1
        merged = (weighted * agree).sum(dim=0)
        if params.get("normalize", name == "ties"):
            divisor = (weights * agree).sum(dim=0)
            divisor[divisor == 0] = 1
            merged = merged / divisor
    return base + merged * float(params.get("lambda", 1.0))


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int16 if x.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties", "dare_ties", "task_arithmetic"])
@pytest.mark.parametrize("models", [1, 3, 6])
@pytest.mark.parametrize("infinite", [False, True])
def test_block_by_block_equals_the_whole_tensor_bit_for_bit(
    name: str, models: int, infinite: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lossless.methods import blocks, sort_replay_scans

    # blocks of 64 entries over a 37×29 tensor: 17 blocks, the last one partial
    monkeypatch.setattr(blocks, "BLOCK", 64)
    monkeypatch.setattr(sort_replay_scans, "BLOCK", 8)
    generator = torch.Generator().manual_seed(models)
    base = (torch.randn(37, 29, generator=generator) * 4).round() / 8
    base.view(-1)[::5] = -0.0
    # values on a 1/16 grid: many task-vector magnitudes tie at the density cut
    tensors = [
        base + (torch.randn(37, 29, generator=generator) * 3).round() / 16 for _ in range(models)
    ]
    tensors[0].view(-1)[::7] = base.view(-1)[::7]  # zero deltas
    if infinite:  # inf task-vector entries; a trimmed one is inf·0 = NaN, as in mergekit
        tensors[-1].view(-1)[3::101] = float("inf")
        tensors[-1].view(-1)[50::101] = -float("inf")
    weights = [1.0, 0.5, -0.3, 2.0, 0.7, 1.0]
    densities = [0.5, 0.3, 0.9, 0.5, 0.1, 0.7]
    model_params = [
        {"weight": weights[i], "density": densities[i], "gamma": 0.05 * i} for i in range(models)
    ]
    for params in ({}, {"lambda": 0.7}, {"normalize": True}):
        got = merge(name, tensors, base, model_params, params, seed=5)
        expected = _whole_tensor_chain(name, tensors, base, model_params, params, seed=5)
        assert torch.equal(_bits(got), _bits(expected)), params


def test_inputs_in_their_stored_dtype_give_the_same_bits_as_cast_inputs() -> None:
    """What the executor relies on when it hands bf16 tensors over uncast."""
    from lossless.methods import task_arithmetic

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(300, 301, generator=generator).bfloat16()
    tensors = [(base.float() + torch.randn(300, 301, generator=generator) / 50).bfloat16()]
    tensors.append((base.float() + torch.randn(300, 301, generator=generator) / 50).bfloat16())
    model_params = [{"weight": 1.0, "density": 0.5}, {"weight": 0.6, "density": 0.4}]
    for name in ("ties", "dare_ties", "della", "breadcrumbs_ties", "task_arithmetic"):
        fn = getattr(task_arithmetic, name)
        cast = fn(
            [t.float() for t in tensors],
            base.float(),
            model_params,
            {},
            generator=torch.Generator().manual_seed(1),
        ).bfloat16()
        stored = fn(
            tensors,
            base,
            model_params,
            {},
            generator=torch.Generator().manual_seed(1),
            dtype=torch.float32,
            out_dtype=torch.bfloat16,
        )
        assert stored.dtype == torch.bfloat16
        assert torch.equal(_bits(stored), _bits(cast)), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("count", [1, 2, 3, 6, 9])
def test_sum_models_has_the_bits_of_torch_sum(dtype: torch.dtype, count: int) -> None:
    from lossless.methods.task_arithmetic import sum_models

    g = torch.Generator().manual_seed(count)
    x = (torch.randn(count, 70001, generator=g) * torch.rand(count, 1, generator=g) * 10).to(dtype)
    x[:, ::7] = -0.0  # -0 + -0 is -0, but torch's sum starts from +0
    x[:, 1::11] = 0.0
    if count > 1:
        x[1, 2::13] = -x[0, 2::13]  # cancellations
    expected, got = x.sum(dim=0), sum_models(x)
    assert got.dtype == expected.dtype
    assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))
