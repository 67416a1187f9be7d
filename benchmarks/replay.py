"""The TIES cut's tie-order replay alone: nanoseconds a key, beside torch.argsort (mergekit's).

    python benchmarks/replay.py [--sizes 2.9M,32M] [--repeat 5]

A bf16 task vector like a fine-tune's (a base drawn N(0, 0.02), the fine-tune 0.001 away,
both rounded to bf16, their difference rounded again) is cut at density 0.5 by
`sort_replay_kernel.cut_of_magnitudes` (the magnitudes' bits made, then the partitions that
hold position k; a fresh index array each time, as a merge allocates one per tensor) and by
`torch.argsort(|delta|, descending=True)[:k]`, which is what mergekit runs. Prints the fastest
of `--repeat` runs of each and whether the two keep the same entries. Run it with another
checkout on PYTHONPATH to time that checkout's replay on the same keys.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")
SIZES = {"2.9M": 2_883_584, "32M": 32_768_000}  # an MLP matrix and an embedding of the 336M preset


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits (int16), rounded to nearest even."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).view(np.int16)


def as_float(bits: np.ndarray) -> np.ndarray:
    return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def task_vector(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = bf16_bits(rng.normal(0, 0.02, n))
    tuned = bf16_bits(as_float(base) + rng.normal(0, 0.001, n).astype(np.float32))
    return bf16_bits(as_float(tuned) - as_float(base))


def fastest(repeat: int, run: Callable[[], T]) -> tuple[float, T]:
    """The fastest of `repeat` runs, in seconds, and the last run's result."""
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - begin)
    return min(times), result


def measure(size: str, repeat: int) -> str:
    """One table row: the replay's and torch.argsort's time for one task vector."""
    import torch

    from lossless.methods import sort_replay_kernel

    delta = task_vector(SIZES[size])
    n, k = delta.size, delta.size // 2
    keys = np.empty_like(delta)
    sort_replay_kernel.cut_of_magnitudes(delta[:1024], keys[:1024], 512)  # load the kernel

    def replay() -> tuple[float, np.ndarray]:
        found = sort_replay_kernel.cut_of_magnitudes(delta, keys, k)
        assert found is not None, "a NaN or the depth limit: not a fine-tune's delta"
        return found

    magnitudes = torch.from_numpy(delta).view(torch.bfloat16).abs()  # as mergekit ranks them

    def argsort() -> np.ndarray:
        kept = torch.zeros(n, dtype=torch.bool)
        kept[torch.argsort(magnitudes, descending=True)[:k]] = True
        return kept.numpy()

    replay_s, (threshold, tied) = fastest(repeat, replay)
    replay_kept = np.abs(as_float(delta)) > threshold
    replay_kept[tied] = True
    sort_s, sort_kept = fastest(max(1, repeat // 2), argsort)
    same = bool(np.array_equal(replay_kept, sort_kept))
    return (
        f"| {size} | {replay_s / n * 1e9:.2f} ns a key ({replay_s:.3f} s) "
        f"| {sort_s / n * 1e9:.1f} ns a key ({sort_s:.2f} s) | {same} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2.9M,32M", help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| entries | replay | torch.argsort | same kept entries |")
    print("|---|---|---|---|")
    for size in args.sizes.split(","):
        print(measure(size, args.repeat), flush=True)


if __name__ == "__main__":
    main()
