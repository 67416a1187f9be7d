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
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
SIZES = {"2.9M": 2_883_584, "32M": 32_768_000}  # an MLP matrix and an embedding of the 336M preset


def task_vector(n: int, seed: int = 0) -> Any:
    """A bf16 torch tensor: a fine-tune's difference from its base, made in bf16."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    base = (torch.randn(n, generator=generator) * 0.02).bfloat16()
    tuned = (base.float() + torch.randn(n, generator=generator) * 0.001).bfloat16()
    return tuned - base


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

    vector = task_vector(SIZES[size])
    delta = vector.view(torch.int16).numpy()  # the bits the merge's cut ranks
    n, k = delta.size, delta.size // 2
    keys = np.empty_like(delta)
    sort_replay_kernel.cut_of_magnitudes(delta[:1024], keys[:1024], 512)  # load the kernel

    def replay() -> tuple[float, np.ndarray]:
        found = sort_replay_kernel.cut_of_magnitudes(delta, keys, k)
        assert found is not None, "a NaN or the depth limit: not a fine-tune's delta"
        return found

    magnitudes = vector.abs()  # as mergekit ranks them

    def argsort() -> np.ndarray:
        kept = torch.zeros(n, dtype=torch.bool)
        kept[torch.argsort(magnitudes, descending=True)[:k]] = True
        return kept.numpy()

    replay_s, (threshold, tied) = fastest(repeat, replay)
    replay_kept = (magnitudes.float() > threshold).numpy()
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
