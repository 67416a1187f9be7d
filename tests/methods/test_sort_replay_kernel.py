"""The compiled replay's own parts: the block partition against Hoare's scalar loop, and the
ranking of a delta's bits against the float32 magnitudes mergekit sorts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossless.methods import sort_replay, sparsify, top_cut

pytestmark = pytest.mark.skipif(
    not sort_replay.COMPILED, reason="numba is absent, or LOSSLESS_FUSED=0"
)


def hoare(keys: np.ndarray, ids: np.ndarray, lo: int, hi: int) -> int:
    """libstdc++'s __unguarded_partition of [lo + 1, hi) around keys[lo], one key at a time."""
    pivot, left, right = keys[lo], lo + 1, hi
    while True:
        while keys[left] > pivot:
            left += 1
        right -= 1
        while pivot > keys[right]:
            right -= 1
        if not left < right:
            return left
        keys[[left, right]] = keys[[right, left]]
        ids[[left, right]] = ids[[right, left]]
        left += 1


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.int32])  # floats; bf16 and f32 bits
@pytest.mark.parametrize("distinct", [1, 2, 5, 1000, 2**15 - 1])
@pytest.mark.parametrize("size", [3, 63, 64, 65, 127, 128, 129, 130, 1000, 4099])
def test_the_block_partition_swaps_what_the_scalar_loop_swaps(
    size: int, distinct: int, dtype: type
) -> None:
    from lossless.methods import sort_replay_kernel

    rng = np.random.default_rng(size * 7 + distinct)
    for trial in range(6):
        keys = rng.integers(0, distinct, size + 2).astype(dtype)
        if trial == 1:
            keys.sort()
        elif trial == 2:
            keys[::-1].sort()
        lo, hi = 1, size + 1  # a range inside the array, as deeper partitions see it
        # a pivot at lo that the scans stop at on both sides: the median of three, as replay has
        keys[lo] = np.median(keys[[lo + 1, (lo + hi) // 2, hi - 1]])
        ids = np.arange(keys.size, dtype=np.int32)
        want_keys, want_ids = keys.copy(), ids.copy()
        want = hoare(want_keys, want_ids, lo, hi)
        got = sort_replay_kernel._partition(keys, ids, lo, hi)
        assert got == want
        assert np.array_equal(keys, want_keys) and np.array_equal(ids, want_ids)


def bits(values: torch.Tensor) -> torch.Tensor:
    """The bit patterns, so that -0 differs from 0 and NaN equals itself."""
    return values.view(torch.int16 if values.dtype == torch.bfloat16 else torch.int32)


def argsort_kept(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros(magnitudes.numel(), dtype=torch.bool)
    mask[torch.argsort(magnitudes, descending=True)[:k]] = True
    return mask


def special_values(dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    """A delta of few magnitudes (ties at every cut) with ±0, ±inf and subnormals among them."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(
        [0.0, -0.0, 1e-40, -1e-40, 0.5, -0.5, 0.25, 3.0, -3.0, float("inf"), -float("inf")]
    )
    return values[torch.randint(0, values.numel(), (n,), generator=generator)].to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("scramble", [False, True])
def test_the_bits_of_a_delta_rank_as_its_float32_magnitudes(
    dtype: torch.dtype, scramble: bool
) -> None:
    generator = torch.Generator().manual_seed(1)
    deltas = [
        special_values(dtype, 20_011, seed=2),
        (torch.randn(50_000, generator=generator) * 0.02).to(dtype)
        - (torch.randn(50_000, generator=generator) * 0.02).to(dtype),
    ]
    for delta in deltas:
        magnitudes = delta.abs().float()
        for k in (1, 17, delta.numel() // 3, delta.numel() // 2, delta.numel() - 1):
            work = delta.clone()
            cut = top_cut.replay_bits_first(work, k, scramble=scramble)
            assert cut is not None
            assert torch.equal(cut.select(magnitudes, 0) == 1, argsort_kept(magnitudes, k)), k
            if scramble:  # the keys were made in its memory: |delta|'s bits, in some order
                assert torch.equal(bits(work).sort().values, bits(delta.abs()).sort().values)
            else:
                assert torch.equal(bits(work), bits(delta))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_nan_stops_the_bits_replay_and_the_selector_sorts(dtype: torch.dtype) -> None:
    delta = special_values(dtype, 5000, seed=4)
    delta[1234] = float("nan")
    work = delta.clone()
    assert top_cut.replay_bits_first(work, 2000, scramble=False) is None
    assert torch.equal(bits(work), bits(delta))
    select = sparsify.top_k_selector(delta.clone(), 2000, remake=delta.clone)
    kept = torch.as_tensor(select(delta, 0)).bool()
    assert torch.equal(kept, argsort_kept(delta.abs().float(), 2000))


def test_the_bits_replay_needs_a_contiguous_cpu_bf16_or_float32_delta() -> None:
    delta = special_values(torch.float32, 4000, seed=5)
    assert top_cut.replays_bits(delta, 100)
    assert top_cut.replays_bits(delta.bfloat16(), 100)
    assert not top_cut.replays_bits(delta.half(), 100)
    assert not top_cut.replays_bits(delta.double(), 100)
    assert not top_cut.replays_bits(delta.view(40, 100).t(), 100)
    assert not top_cut.replays_bits(delta, 0) and not top_cut.replays_bits(delta, 4000)
