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


def test_della_rejects_epsilon_that_leaves_the_unit_interval() -> None:
    with pytest.raises(LosslessError, match="epsilon"):
        merge("della", [torch.ones(3)], torch.zeros(3), [{"weight": 1.0, "density": 0.1}], seed=0)
