"""The streamed tie-order replay: argsort's first k, ties at the cut included, with the
partitions read as views of the ones before instead of held arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossless.methods import replay_stream


def tie_heavy(n: int, distinct: int, seed: int) -> torch.Tensor:
    return torch.randint(0, distinct, (n,), generator=torch.Generator().manual_seed(seed)).float()


def argsort_tied(keys: torch.Tensor, k: int) -> tuple[float, np.ndarray]:
    """The k-th largest key and which keys equal to it a descending argsort puts first."""
    order = torch.argsort(keys, descending=True)
    threshold = float(keys[order[k - 1]])
    first = order[:k]
    return threshold, first[keys[first] == threshold].sort().values.numpy()


class Counting(replay_stream.Source):
    """A source over keys in memory that counts the entries read (each pass re-reads)."""

    def __init__(self, keys: torch.Tensor, chunk: int) -> None:
        array = keys.numpy()
        self.reads = 0

        def read(lo: int, hi: int) -> np.ndarray:
            self.reads += hi - lo
            return array[lo:hi].copy()

        super().__init__(read, keys.numel(), chunk)


@pytest.fixture
def small_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    # blocks of 64 positions: every stop count, partner stream and chunk crosses many blocks
    monkeypatch.setattr(replay_stream, "GRID", 64)


# share: the memory given, as a fraction of the keys' bytes (0: views down to 16 keys)
CASES = [(40, 2, 0), (1000, 3, 0)] + [
    (n, distinct, share)
    for n, distinct in [(40, 2), (1000, 3), (6007, 7), (20011, 40), (20011, 100000)]
    for share in (8, 3)
]


@pytest.mark.parametrize(("n", "distinct", "share"), CASES)
def test_streamed_replay_picks_what_argsort_picks(small_grid, n: int, distinct: int, share):
    keys = tie_heavy(n, distinct, seed=n + distinct)
    memory = 0 if share == 0 else 4 * n // share
    for k in sorted({1, 17, n // 3, n // 2, n - 1}):
        threshold, expected = argsort_tied(keys, k)
        source = Counting(keys, chunk=101)
        got = replay_stream.replay_top_k(source, k, threshold, memory)
        assert got is not None and np.array_equal(got, expected), k


def test_views_are_read_in_passes_not_held(small_grid) -> None:
    n = 20011
    keys = tie_heavy(n, 9, seed=1)
    threshold, expected = argsort_tied(keys, n // 2)
    source = Counting(keys, chunk=256)
    got = replay_stream.replay_top_k(source, n // 2, threshold, memory=4 * n // 8)
    assert got is not None and np.array_equal(got, expected)
    # several partitions were streamed (a pass each, plus the gather), none held the keys
    assert 3 * n < source.reads < 40 * n


def test_bf16_deltas_and_an_ascending_sort(small_grid) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(30000, generator=g).bfloat16().float() for _ in range(2))
    magnitudes = (a - b).abs()
    for k in (1000, 15000, 29000):
        threshold, expected = argsort_tied(magnitudes, k)
        got = replay_stream.replay_top_k(Counting(magnitudes, 300), k, threshold, 4 * 30000 // 6)
        assert got is not None and np.array_equal(got, expected)
        # ascending: torch.sort's first k of the keys, as a descending sort of their negation
        order = torch.sort(magnitudes).indices[:k]
        low = float(magnitudes[order[-1]])
        expected_low = order[magnitudes[order] == low].sort().values.numpy()
        negated = Counting(-magnitudes, 300)
        got_low = replay_stream.replay_top_k(negated, k, -low, 4 * 30000 // 6)
        assert got_low is not None and np.array_equal(got_low, expected_low)


def test_keys_without_low_bits_are_held_as_their_high_halves(small_grid) -> None:
    """bf16 magnitudes (no low bits) held 2 bytes a key: the same picks as argsort's, ties at
    the cut included, and a range twice as long held, so fewer passes over the source."""
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(30000, generator=g).bfloat16() for _ in range(2))
    magnitudes = (a - b).abs().float()  # bf16 subtraction: every key is a bf16 value
    assert not bool(torch.any(magnitudes.view(torch.int32) & 0xFFFF))
    memory = 4 * 30000 // 3  # the float32 keys do not fit; their halves do
    for k in (1, 1000, 15000, 29999):
        threshold, expected = argsort_tied(magnitudes, k)
        plain, halves = Counting(magnitudes, 300), Counting(magnitudes, 300)
        got = replay_stream.replay_top_k(plain, k, threshold, memory)
        got_halves = replay_stream.replay_top_k(halves, k, threshold, memory, high_bits_only=True)
        assert got is not None and np.array_equal(got, expected), k
        assert got_halves is not None and np.array_equal(got_halves, expected), k
        assert halves.reads < plain.reads, k
