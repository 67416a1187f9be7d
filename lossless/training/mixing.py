"""Several datasets mixed by weight: which rows of each, how many times, in what seeded order.

`data: [{path: a.jsonl, weight: 3}, {path: b.jsonl, weight: 1}]` makes a training set in which
a contributes 3/4 of the rows and b 1/4. The size of the mixture is the step's: for `data:` the
number of rows of all sources together (what concatenating them would give), for `replay.data`
the replayed count (fraction × new examples), for `ewc.data` its `samples`. Each source's count
is its share of that size, rounded by largest remainder so the counts add up exactly:

    sizes [100, 10], weights [3, 1], total 110  →  counts [83, 27]  (82.5 and 27.5: the tie goes
                                                                     to the first source)

A source with at least its count of rows gives that many distinct rows, drawn without
replacement; a smaller one gives every row once per full pass and the rest drawn without
replacement (27 of 10 rows: each row twice, 7 of them three times), so no row repeats more than
needed. The picked rows are then shuffled together. Everything is drawn from one
`random.Random(seed)` (the step's seed): same seed, same rows, same order.

Written here rather than with `datasets.interleave_datasets`: that draws each next row's source
at random with the given probabilities, so the counts are only near the weights, and its
oversampling ("all_exhausted") repeats every source until the largest is used up; a weight here
is an exact share.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

Pick = tuple[int, int]  # (source index, row index in that source)


def mix_counts(weights: Sequence[float], total: int) -> list[int]:
    """Each source's share of `total` rows, by weight, rounded by largest remainder (ties: the
    earlier source), e.g. weights [1, 1, 1], total 10 → [4, 3, 3]."""
    if total < 0 or not weights or any(w <= 0 for w in weights):
        raise ValueError(
            f"mix_counts needs positive weights and total >= 0, got {weights}, {total}"
        )
    scale = sum(weights)
    exact = [w * total / scale for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def draw_rows(size: int, count: int, rng: random.Random) -> list[int]:
    """`count` row indices of a source of `size` rows: whole passes over every row, then the
    rest drawn without replacement (so rows repeat only when the source is too small)."""
    if count and not size:
        raise ValueError("cannot draw rows from an empty source")
    passes, rest = divmod(count, size) if size else (0, 0)
    return [j for _ in range(passes) for j in range(size)] + rng.sample(range(size), rest)


def mix(sizes: Sequence[int], weights: Sequence[float], total: int, seed: int) -> list[Pick]:
    """The mixture as (source, row) picks in their training order (see the module docstring)."""
    if len(sizes) != len(weights):
        raise ValueError("one weight per source")
    rng = random.Random(seed)
    picks = [
        (s, j)
        for s, (size, count) in enumerate(zip(sizes, mix_counts(weights, total), strict=True))
        for j in draw_rows(size, count, rng)
    ]
    rng.shuffle(picks)
    return picks
