"""A trial's scores → its objective, each constraint's margin, feasible or not.

Pure arithmetic on numbers, like `evaluation/gates.py`, whose vocabulary the constraints use
(`{A: {max_regression: 0.02}}`, `min_score`, `metric`, `relative`) and whose `check_gates`
decides feasibility, so a search constraint and an eval gate can never disagree. A margin is how
far inside its bound a constraint is (0.015 = regressed 0.5 % under a 2 % limit; negative =
broken), in the unit of its rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lossless.evaluation.gates import (
    LOWER_IS_BETTER,
    Scores,
    check_gates,
    default_metric,
    regression,
)
from lossless.evaluation.skills import dataset_skills
from lossless.recipe.model import SearchObjective

TRIAL = "trial"  # the name a trial's merge has in the scores handed to check_gates


@dataclass(frozen=True)
class Judgement:
    objective: float  # the objective metric as measured
    score: float  # the objective signed so that larger is better (what samplers maximise)
    values: dict[str, float]  # constraint dataset → its metric's value
    margins: dict[str, float]  # constraint dataset → margin of its tightest rule
    breaches: tuple[str, ...] = field(default_factory=tuple)

    @property
    def feasible(self) -> bool:
        return not self.breaches

    @property
    def worst_margin(self) -> float:
        return min(self.margins.values(), default=math.inf)


def objective_metric(objective: SearchObjective, formats: Mapping[str, str]) -> str:
    return objective.metric or default_metric(formats[objective.dataset])


def maximizes(objective: SearchObjective, formats: Mapping[str, str]) -> bool:
    if objective.goal is not None:
        return objective.goal == "maximize"
    return objective_metric(objective, formats) not in LOWER_IS_BETTER


def constraint_metric(gate: Mapping[str, Any], dataset: str, formats: Mapping[str, str]) -> str:
    return str(gate.get("metric") or default_metric(formats[dataset]))


def margin(gate: Mapping[str, Any], metric: str, value: float, reference: float | None) -> float:
    """The tightest of a gate's rules: limit − regression, or the distance to min_score."""
    margins = []
    if gate.get("max_regression") is not None and reference is not None:
        worse = regression(metric, value, reference, relative=bool(gate.get("relative", True)))
        margins.append(float(gate["max_regression"]) - worse)
    if gate.get("min_score") is not None:
        bound = float(gate["min_score"])
        margins.append(bound - value if metric in LOWER_IS_BETTER else value - bound)
    return min(margins, default=math.inf)


def judge(
    scores: Mapping[str, Mapping[str, float]],
    *,
    objective: SearchObjective,
    constraints: Mapping[str, Mapping[str, Any]],
    reference: str,
    reference_scores: Mapping[str, Mapping[str, float]],
    formats: Mapping[str, str],
) -> Judgement:
    """Judge one trial's `scores` (dataset → metric → value) against the reference's."""
    metric = objective_metric(objective, formats)
    value = float(scores[objective.dataset][metric])
    signed = value if maximizes(objective, formats) else -value
    both: Scores = {reference: reference_scores, TRIAL: scores}
    breaches = check_gates(constraints, both, reference=reference, skills=dataset_skills(formats))
    values, margins = {}, {}
    for dataset, gate in constraints.items():
        cmetric = constraint_metric(gate, dataset, formats)
        values[dataset] = float(scores[dataset][cmetric])
        ref = reference_scores.get(dataset, {}).get(cmetric)
        margins[dataset] = margin(gate, cmetric, values[dataset], ref)
    return Judgement(
        objective=value,
        score=signed if math.isfinite(signed) else -math.inf,
        values=values,
        margins=margins,
        breaches=tuple(b.message().replace(f"{TRIAL} on ", "", 1) for b in breaches),
    )


def better(a: Judgement, b: Judgement | None) -> bool:
    """Is `a` a better trial than `b`? Feasible beats infeasible, then the objective decides."""
    if b is None:
        return True
    if a.feasible != b.feasible:
        return a.feasible
    if a.feasible:
        return a.score > b.score
    return a.worst_margin > b.worst_margin  # among infeasible ones: the closest to feasible
