"""The trial loop: ask the sampler for a point, measure it, tell the sampler how it did.

`evaluate(number, point)` does the work (in a run: a cached merge + eval, `stage.py`; in tests: a
formula), so the loop itself is a few lines that a unit test drives without any model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lossless.search.judge import Judgement, better
from lossless.search.samplers import Sampler

VIOLATION_CLIP = 1e9  # optuna wants a finite violation; "no constraint" is margin +inf


@dataclass(frozen=True)
class Trial:
    number: int  # 1-based, in the order tried
    point: dict[str, Any]  # vary name → value
    judgement: Judgement
    key: str = ""  # the trial config's fingerprint (its cache entry)
    cached: bool = False  # its numbers came from an earlier run


def run_trials(
    sampler: Sampler, budget: int, evaluate: Callable[[int, dict[str, Any]], Trial]
) -> list[Trial]:
    """At most `budget` trials (fewer when the sampler runs out, as a grid does)."""
    trials: list[Trial] = []
    for number in range(1, budget + 1):
        point = sampler.ask()
        if point is None:
            break
        trial = evaluate(number, point)
        violation = max(-VIOLATION_CLIP, min(VIOLATION_CLIP, -trial.judgement.worst_margin))
        sampler.tell(point, trial.judgement.score, violation)
        trials.append(trial)
    return trials


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """The best trial by `judge.better` (feasible first, then the objective; first on ties)."""
    best: Trial | None = None
    for trial in trials:
        if best is None or better(trial.judgement, best.judgement):
            best = trial
    return best
