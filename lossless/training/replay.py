"""`replay: {data, fraction}` — mix rows of an old dataset into training, the simplest
countermeasure against forgetting: the model keeps seeing what it already knew."""

from __future__ import annotations

import random
from typing import Any


def replay_rows(
    old_rows: list[dict[str, Any]], n_train: int, fraction: float, seed: int
) -> list[dict[str, Any]]:
    """round(fraction × n_train) rows drawn from old_rows with `seed` (e.g. 0.25 × 8 → 2 rows);
    without replacement while there are enough rows, with replacement beyond that."""
    k = round(fraction * n_train)
    if k <= 0 or not old_rows:
        return []
    rng = random.Random(seed)
    if k <= len(old_rows):
        return rng.sample(old_rows, k)
    return [rng.choice(old_rows) for _ in range(k)]
