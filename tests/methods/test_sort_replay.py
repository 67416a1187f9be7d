"""The argsort replay: the same first-k entries as torch.argsort, ties at the cut included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossless.methods import sort_replay, sort_replay_scans, sparsify, top_cut


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def replay_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: the compiled replay (sort_replay_kernel.py) and numpy's, which also
    runs the streamed replays and runs wherever numba is absent."""
    if request.param == "compiled" and not sort_replay.COMPILED:
        pytest.skip("numba is absent, or LOSSLESS_FUSED=0")
    # the once-per-process self-check, made before any test patches the replay (a patched
    # replay that gives up would leave it False for every later test in this process)
    assert sort_replay.replay_agrees()
    monkeypatch.setattr(sort_replay, "COMPILED", request.param == "compiled")
    return str(request.param)


def argsort_first_k(keys: torch.Tensor, k: int) -> torch.Tensor:
    """What mergekit keeps: the first k of a full descending argsort, as a mask."""
    mask = torch.zeros(keys.numel(), dtype=torch.bool)
    mask[torch.argsort(keys, descending=True)[:k]] = True
    return mask


def replayed_first_k(keys: torch.Tensor, k: int) -> torch.Tensor:
    result = sort_replay.replay_top_k(keys.numpy().copy(), k)
    assert result is not None
    threshold, tied = result
    mask = keys > threshold
    mask[torch.from_numpy(tied)] = True
    assert bool((keys[torch.from_numpy(tied)] == threshold).all())
    return mask


def tie_heavy(n: int, distinct: int, seed: int, order: str = "random") -> torch.Tensor:
    keys = torch.randint(0, distinct, (n,), generator=torch.Generator().manual_seed(seed)).float()
    if order != "random":
        keys = keys.sort(descending=order == "descending").values
    return keys


@pytest.mark.parametrize("block", [8, 64, sort_replay_scans.BLOCK])
@pytest.mark.parametrize(
    ("n", "distinct", "order"),
    [
        (17, 2, "random"),
        (33, 1, "random"),  # every key tied
        (100, 3, "random"),
        (1000, 10, "ascending"),
        (1000, 10, "descending"),
        (4097, 50, "random"),
        (30011, 7, "random"),
        (30011, 100000, "random"),  # few ties
    ],
)
def test_replay_picks_what_argsort_picks(block: int, n: int, distinct: int, order: str) -> None:
    # small blocks put every partition's scans across many blocks, with odd tails; small
    # sub-blocks put the swap count's crossing across several of them
    saved = sort_replay_scans.BLOCK, sort_replay_scans.SUB
    sort_replay_scans.BLOCK, sort_replay_scans.SUB = block, max(1, block // 8)
    try:
        keys = tie_heavy(n, distinct, seed=n + distinct, order=order)
        for k in sorted({1, 2, 16, n // 3, n // 2, n - 17, n - 1}):
            if 0 < k < n:
                assert torch.equal(replayed_first_k(keys, k), argsort_first_k(keys, k)), k
    finally:
        sort_replay_scans.BLOCK, sort_replay_scans.SUB = saved


def test_bf16_like_deltas_many_equal_magnitudes_at_the_cut() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(200_000, generator=generator).bfloat16().float() for _ in range(2))
    keys = (a - b).abs()
    for k in (1000, 100_000, 150_001):
        threshold = keys.sort(descending=True).values[k - 1]
        assert int((keys == threshold).sum()) > 1  # the case the replay exists for
        assert torch.equal(replayed_first_k(keys, k), argsort_first_k(keys, k))


def test_ranges_of_sixteen_or_fewer_are_the_final_stable_insertion_sort() -> None:
    for n in range(2, 17):
        keys = tie_heavy(n, 2, seed=n)
        for k in range(1, n):
            assert torch.equal(replayed_first_k(keys, k), argsort_first_k(keys, k))


def test_self_check_passes_with_this_torch() -> None:
    assert sort_replay.replay_agrees()


def test_median_of_three_follows_the_branch_order_of_libstdcxx() -> None:
    # distinct keys: the median wins; equal keys: the branch order decides which slot
    assert sort_replay._median_slot(3.0, 2.0, 1.0) == 1
    assert sort_replay._median_slot(1.0, 3.0, 2.0) == 2
    assert sort_replay._median_slot(2.0, 1.0, 3.0) == 0
    assert sort_replay._median_slot(1.0, 1.0, 1.0) == 1
    assert sort_replay._median_slot(2.0, 1.0, 1.0) == 2


@pytest.mark.parametrize("give_up", [False, True])
def test_top_k_selector_equals_argsort_even_when_the_replay_gives_up(
    give_up: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if give_up:  # the introsort depth limit: the selector must sort instead
        monkeypatch.setattr(sort_replay, "depth_limit", lambda n: 1)
        assert sort_replay.replay_top_k(tie_heavy(5000, 9, seed=3).numpy(), 1234) is None
    delta = (tie_heavy(5000, 9, seed=3) - 4) / 8
    expected = argsort_first_k(delta.abs(), 1234)
    # `remake` lets the selector rank in the delta's own memory and make it again if needed
    select = sparsify.top_k_selector(delta.clone(), 1234, remake=delta.clone)
    assert torch.equal(select(delta, 0), expected)
    assert torch.equal(select(delta[1000:2000], 1000), expected[1000:2000])


def test_nan_magnitudes_take_the_sorting_path() -> None:
    delta = torch.tensor([0.5, float("nan"), -0.25, 0.125, 0.5, -0.5] * 5)
    select = sparsify.top_k_selector(delta, 7)
    expected = torch.zeros(delta.numel(), dtype=torch.bool)
    expected[torch.argsort(delta.abs(), descending=True)[:7]] = True
    assert torch.equal(select(delta, 0), expected)


def test_ids_stay_int32_and_tied_indices_come_back_sorted() -> None:
    keys = tie_heavy(3000, 4, seed=9)
    result = sort_replay.replay_top_k(keys.numpy().copy(), 1500)
    assert result is not None
    _, tied = result
    assert tied.dtype == np.int64 and bool(np.all(np.diff(tied) > 0))


@pytest.mark.parametrize("n", [17, 1000, 30011])
def test_ascending_sort_is_replayed_as_the_descending_sort_of_negated_keys(n: int) -> None:
    keys = tie_heavy(n, 6, seed=n)
    for k in (1, n // 4, n // 2, n - 1):
        cut = top_cut.replay_first(keys.clone(), k, ascending=True)
        assert cut is not None
        expected = torch.zeros(n, dtype=torch.bool)
        expected[torch.sort(keys).indices[:k]] = True
        assert torch.equal(cut.select(keys, 0) == 1, expected)


def test_breadcrumbs_band_matches_the_sorted_slice_with_ties() -> None:
    delta = (tie_heavy(20000, 13, seed=1) - 6) / 4  # |delta| takes 7 values: ties everywhere
    count, keep, outliers = 20000, 9000, 1500
    smallest = count - keep - outliers
    expected = torch.zeros(count, dtype=torch.bool)
    expected[torch.sort(delta.abs()).indices[smallest : smallest + keep]] = True
    kept = sparsify.middle_magnitude(delta, keep / count, outliers / count)
    assert torch.equal(kept.apply(delta) != 0, expected & (delta != 0))
    assert torch.equal(kept.apply(delta), delta * expected)


def test_the_depth_limit_gives_up_where_the_sort_would_heap_sort() -> None:
    keys = tie_heavy(5000, 40, seed=3)
    assert sort_replay.replay_top_k(keys.numpy().copy(), 2500, depth=1) is None
    assert sort_replay.replay_top_k(keys.numpy().copy(), 2500, depth=30) is not None
