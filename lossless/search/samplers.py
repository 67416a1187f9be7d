"""Where the next trial's values come from: a grid, seeded random draws, or optuna's TPE.

Every sampler is `ask() -> point | None` (None: nothing left to try) and
`tell(point, objective, violation)`, where `objective` is already signed so that larger is
better and `violation` is how far the worst constraint is broken (<= 0: every one holds).
Only optuna learns from `tell`; the grid and random samplers ignore it. No optimiser is written
here: the grid is `itertools.product`, random is `random.Random(seed)`, TPE is optuna's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from lossless.errors import LosslessError
from lossless.recipe.model import SearchDimension
from lossless.search.space import grid, is_integral, snap

Point = dict[str, Any]


class Sampler(Protocol):
    def ask(self) -> Point | None: ...

    def tell(self, point: Point, objective: float, violation: float) -> None: ...


class GridSampler:
    """Every grid point once, in order (first `vary` key slowest)."""

    def __init__(self, dims: Sequence[SearchDimension]) -> None:
        self._points: Iterator[Point] = grid(dims)

    def ask(self) -> Point | None:
        return next(self._points, None)

    def tell(self, point: Point, objective: float, violation: float) -> None:
        pass


class RandomSampler:
    """Independent uniform draws (log-uniform with `log: true`), reproducible from the seed."""

    def __init__(self, dims: Sequence[SearchDimension], seed: int) -> None:
        self.dims = dims
        self.rng = random.Random(seed)

    def ask(self) -> Point | None:
        return {d.name: self._draw(d) for d in self.dims}

    def _draw(self, dim: SearchDimension) -> Any:
        if dim.choices is not None:
            return dim.choices[self.rng.randrange(len(dim.choices))]
        assert dim.low is not None and dim.high is not None
        if dim.log:
            value = math.exp(self.rng.uniform(math.log(dim.low), math.log(dim.high)))
        else:
            value = self.rng.uniform(dim.low, dim.high)
        return snap(dim, value)

    def tell(self, point: Point, objective: float, violation: float) -> None:
        pass


class OptunaSampler:
    """optuna's TPE (seeded), told each trial's objective and constraint violation."""

    def __init__(self, dims: Sequence[SearchDimension], seed: int) -> None:
        optuna = require_optuna()
        import warnings

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():  # constraints_func is marked experimental
            warnings.simplefilter("ignore")
            sampler = optuna.samplers.TPESampler(
                seed=seed, constraints_func=lambda t: [t.user_attrs["violation"]]
            )
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.dims = dims
        self.distributions: dict[str, Any] = {}
        for d in dims:
            if d.choices is not None:  # by index: optuna takes only plain scalars as choices
                dist: Any = optuna.distributions.CategoricalDistribution(
                    list(range(len(d.choices)))
                )
            elif is_integral(d):
                dist = optuna.distributions.IntDistribution(
                    int(d.low or 0), int(d.high or 0), step=int(d.step or 1)
                )
            else:
                assert d.low is not None and d.high is not None
                dist = optuna.distributions.FloatDistribution(d.low, d.high, step=d.step, log=d.log)
            self.distributions[d.name] = dist
        self._open: list[tuple[Point, Any]] = []

    def ask(self) -> Point | None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(self.distributions)
        point = {}
        for d in self.dims:
            value = trial.params[d.name]
            point[d.name] = d.choices[value] if d.choices is not None else value
        self._open.append((point, trial))
        return point

    def tell(self, point: Point, objective: float, violation: float) -> None:
        import warnings

        index = next(i for i, (p, _) in enumerate(self._open) if p is point)
        _, trial = self._open.pop(index)
        trial.set_user_attr("violation", float(violation))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if math.isfinite(objective):
                self.study.tell(trial, objective)
            else:
                self.study.tell(trial, state=_optuna().trial.TrialState.FAIL)


def _optuna() -> Any:
    import optuna

    return optuna


def require_optuna() -> Any:
    try:
        return _optuna()
    except ImportError:
        raise LosslessError(
            "search sampler `optuna` needs the optuna package, which is not installed",
            hint="pip install 'lossless[search]' (or use sampler: grid | random)",
        ) from None


SAMPLERS = ("grid", "random", "optuna")


def make_sampler(name: str, dims: Sequence[SearchDimension], seed: int) -> Sampler:
    if name == "grid":
        return GridSampler(dims)
    if name == "random":
        return RandomSampler(dims, seed)
    if name == "optuna":
        return OptunaSampler(dims, seed)
    raise LosslessError(f"unknown search sampler {name!r}", hint=f"one of: {', '.join(SAMPLERS)}")
