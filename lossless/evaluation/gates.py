"""Gates: per-skill thresholds that fail a run when a model forgot too much.

A gate is written in the recipe as `gate: {general: {max_regression: 0.02}}`, keyed by a dataset
of `data:` or a task of `tasks:`, and checked for every evaluated model except the reference.
Pure arithmetic on the scores, so it is tested with crafted numbers and never needs a model.

    metric         a dataset: exact_match for chat/instruction data, loss otherwise (any computed
                   metric); a task: its first metric (`acc`), or any it reports (`acc_norm`,
                   `exact_match,strict-match`; `acc,none` is `acc`)
    max_regression worst allowed drop vs the reference model; relative (0.02 = 2 % of the
                   reference value) unless `relative: false`, then absolute (0.02 = 2 points)
    min_score      worst acceptable value: a floor for a higher-is-better metric (exact_match,
                   acc), a ceiling for a lower-is-better one (loss, perplexity)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lossless.errors import LosslessError
from lossless.evaluation.skills import (
    LOWER_IS_BETTER,
    SkillInfo,
    default_metric,
    is_metric,
    normalise_metric,
)

__all__ = ["LOWER_IS_BETTER", "Breach", "check_gates", "default_metric", "regression"]

# Slack for float round-off at the threshold: (0.80 - 0.72) / 0.80 is 0.10000000000000003, and
# `max_regression: 0.1` must accept it.
EPSILON = 1e-9

# Scores as computed by `metrics.py`: model → dataset → metric → value.
Scores = Mapping[str, Mapping[str, Mapping[str, float]]]


def regression(
    metric: str,
    value: float,
    reference: float,
    *,
    relative: bool = True,
    lower_is_better: bool | None = None,
) -> float:
    """How much worse `value` is than `reference` (positive = worse, negative = better).

    exact_match 0.80 vs 0.90 → 0.1111 relative, 0.10 absolute; loss 2.2 vs 2.0 → 0.10 relative.
    `lower_is_better` is the metric's direction (None: from its name, loss and perplexity).
    """
    lower = metric in LOWER_IS_BETTER if lower_is_better is None else lower_is_better
    worse_by = value - reference if lower else reference - value
    if not relative:
        return worse_by
    if reference == 0:
        # Nothing to scale by (an exact_match of 0): any worsening is infinitely large.
        return 0.0 if worse_by <= 0 else math.inf
    return worse_by / abs(reference)


@dataclass(frozen=True)
class Breach:
    """One gate that a model failed on one skill (a dataset or a task)."""

    model: str
    dataset: str
    metric: str
    value: float
    threshold: float
    rule: str  # "max_regression" | "min_score"
    reference_model: str | None = None
    reference_value: float | None = None
    relative: bool = True
    lower_is_better: bool | None = None  # None: from the metric's name (loss, perplexity)

    def message(self) -> str:
        """E.g. `merged on general: exact_match 0.8000 regressed 11.11 % vs base (0.9000); ...`."""
        head = f"{self.model} on {self.dataset}: {self.metric} {self.value:.4f}"
        lower = (
            self.metric in LOWER_IS_BETTER if self.lower_is_better is None else self.lower_is_better
        )
        if self.rule == "min_score":
            bound = "above the maximum" if lower else "below the minimum"
            return f"{head} is {bound} min_score {self.threshold:g}"
        assert self.reference_value is not None
        worse = regression(
            self.metric,
            self.value,
            self.reference_value,
            relative=self.relative,
            lower_is_better=lower,
        )
        amount = f"{worse * 100:.2f} %" if self.relative else f"{worse:.4f}"
        limit = f"{self.threshold * 100:g} %" if self.relative else f"{self.threshold:g}"
        kind = "relative" if self.relative else "absolute"
        return (
            f"{head} regressed {amount} vs {self.reference_model} ({self.reference_value:.4f}); "
            f"max_regression is {limit} ({kind})"
        )


def gate_metric(gate: Mapping[str, Any], skill: SkillInfo) -> str:
    """The metric a gate judges: its `metric:` (lm-eval's `acc,none` read as `acc`), else the
    dataset's default (exact_match for chat/instruction data, loss otherwise) or the task's first."""
    named = gate.get("metric")
    if named:
        return normalise_metric(str(named))
    return skill.metric if skill.is_task else default_metric(skill.format)


def check_gates(
    gates: Mapping[str, Mapping[str, Any]],
    scores: Scores,
    *,
    reference: str | None,
    skills: Mapping[str, SkillInfo],
) -> list[Breach]:
    """Every breach of every gate, for every model but the reference (which is the yardstick).

    `skills` describes each dataset and task (default metric, direction). A gate on a skill or
    metric that was not measured is a user mistake and raises a LosslessError naming it.
    """
    breaches: list[Breach] = []
    for name, gate in gates.items():
        if name not in skills:
            raise LosslessError(
                f"gate on {name!r}, which is no dataset of this eval step's `data:` "
                "nor a task of its `tasks:`",
                hint=f"gate one of: {', '.join(sorted(skills)) or '(none)'}",
            )
        skill = skills[name]
        metric = gate_metric(gate, skill)
        lower = skill.lower_is_better(metric)
        relative = bool(gate.get("relative", True))
        max_regression = gate.get("max_regression")
        min_score = gate.get("min_score")
        for model, per_skill in scores.items():
            if model == reference:
                continue
            value = _metric_value(per_skill, skill, metric, model)
            if min_score is not None and _below_min(lower, value, float(min_score)):
                breaches.append(
                    Breach(
                        model,
                        name,
                        metric,
                        value,
                        float(min_score),
                        "min_score",
                        lower_is_better=lower,
                    )
                )
            if max_regression is None:
                continue
            if reference is None:
                raise LosslessError(
                    f"gate on {name!r} sets max_regression but the eval step has no reference",
                    hint="set `reference:` or list the reference model first in `models:`",
                )
            ref_value = _metric_value(scores[reference], skill, metric, reference)
            worse = regression(metric, value, ref_value, relative=relative, lower_is_better=lower)
            if worse > float(max_regression) + EPSILON:
                breaches.append(
                    Breach(
                        model,
                        name,
                        metric,
                        value,
                        float(max_regression),
                        "max_regression",
                        reference_model=reference,
                        reference_value=ref_value,
                        relative=relative,
                        lower_is_better=lower,
                    )
                )
    return breaches


def _below_min(lower_is_better: bool, value: float, min_score: float) -> bool:
    if lower_is_better:
        return value > min_score + EPSILON
    return value < min_score - EPSILON


def _metric_value(
    per_skill: Mapping[str, Mapping[str, float]], skill: SkillInfo, metric: str, model: str
) -> float:
    measured = per_skill.get(skill.name, {})
    if metric not in measured:
        shown = ", ".join(sorted(filter(is_metric, measured))) or "(none)"
        if skill.is_task:
            hint = f"task {skill.name!r} reported: {shown}; pick one as the gate's `metric:`"
        else:
            hint = (
                f"measured metrics: {shown}; add it to `metrics:` or pick another `metric:` "
                "(exact_match needs chat/instruction data)"
            )
        raise LosslessError(
            f"gate on {skill.name!r} uses metric {metric!r}, which was not measured for {model}",
            hint=hint,
        )
    return float(measured[metric])
