"""Gates: per-dataset thresholds that fail a run when a model forgot too much.

A gate is written in the recipe as `gate: {general: {max_regression: 0.02}}` and checked for every
evaluated model except the reference. Pure arithmetic on the scores, so it is tested with crafted
numbers and never needs a model.

    metric         exact_match for chat/instruction data, loss otherwise (any computed metric)
    max_regression worst allowed drop vs the reference model; relative (0.02 = 2 % of the
                   reference value) unless `relative: false`, then absolute (0.02 = 2 points)
    min_score      worst acceptable value: a floor for exact_match, a ceiling for loss/perplexity
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lossless.errors import LosslessError

# Metrics where a smaller number is better; every other metric (exact_match, lm_eval accuracies)
# is higher-is-better.
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
# Slack for float round-off at the threshold: (0.80 - 0.72) / 0.80 is 0.10000000000000003, and
# `max_regression: 0.1` must accept it.
EPSILON = 1e-9

# Scores as computed by `metrics.py`: model → dataset → metric → value.
Scores = Mapping[str, Mapping[str, Mapping[str, float]]]


def default_metric(fmt: str) -> str:
    """The metric a gate and the report use when none is named: what the data can judge best."""
    return "exact_match" if fmt in ("chat", "instruction") else "loss"


def regression(metric: str, value: float, reference: float, *, relative: bool = True) -> float:
    """How much worse `value` is than `reference` (positive = worse, negative = better).

    exact_match 0.80 vs 0.90 → 0.1111 relative, 0.10 absolute; loss 2.2 vs 2.0 → 0.10 relative.
    """
    worse_by = value - reference if metric in LOWER_IS_BETTER else reference - value
    if not relative:
        return worse_by
    if reference == 0:
        # Nothing to scale by (an exact_match of 0): any worsening is infinitely large.
        return 0.0 if worse_by <= 0 else math.inf
    return worse_by / abs(reference)


@dataclass(frozen=True)
class Breach:
    """One gate that a model failed on one dataset."""

    model: str
    dataset: str
    metric: str
    value: float
    threshold: float
    rule: str  # "max_regression" | "min_score"
    reference_model: str | None = None
    reference_value: float | None = None
    relative: bool = True

    def message(self) -> str:
        """E.g. `merged on general: exact_match 0.8000 regressed 11.11 % vs base (0.9000); ...`."""
        head = f"{self.model} on {self.dataset}: {self.metric} {self.value:.4f}"
        if self.rule == "min_score":
            bound = (
                "below the minimum" if self.metric not in LOWER_IS_BETTER else "above the maximum"
            )
            return f"{head} is {bound} min_score {self.threshold:g}"
        assert self.reference_value is not None
        worse = regression(self.metric, self.value, self.reference_value, relative=self.relative)
        amount = f"{worse * 100:.2f} %" if self.relative else f"{worse:.4f}"
        limit = f"{self.threshold * 100:g} %" if self.relative else f"{self.threshold:g}"
        kind = "relative" if self.relative else "absolute"
        return (
            f"{head} regressed {amount} vs {self.reference_model} ({self.reference_value:.4f}); "
            f"max_regression is {limit} ({kind})"
        )


def check_gates(
    gates: Mapping[str, Mapping[str, Any]],
    scores: Scores,
    *,
    reference: str | None,
    formats: Mapping[str, str],
) -> list[Breach]:
    """Every breach of every gate, for every model but the reference (which is the yardstick).

    `formats` maps dataset → data format, for the default metric. A gate on a dataset or metric
    that was not measured is a user mistake and raises a LosslessError naming it.
    """
    breaches: list[Breach] = []
    for dataset, gate in gates.items():
        if dataset not in formats:
            raise LosslessError(
                f"gate on dataset {dataset!r}, which is not in this eval step's `data:`",
                hint=f"gate one of: {', '.join(sorted(formats)) or '(none)'}",
            )
        metric = str(gate.get("metric") or default_metric(formats[dataset]))
        relative = bool(gate.get("relative", True))
        max_regression = gate.get("max_regression")
        min_score = gate.get("min_score")
        for model, per_dataset in scores.items():
            if model == reference:
                continue
            value = _metric_value(per_dataset, dataset, metric, model)
            if min_score is not None and _below_min(metric, value, float(min_score)):
                breaches.append(
                    Breach(model, dataset, metric, value, float(min_score), "min_score")
                )
            if max_regression is None:
                continue
            if reference is None:
                raise LosslessError(
                    f"gate on {dataset!r} sets max_regression but the eval step has no reference",
                    hint="set `reference:` or list the reference model first in `models:`",
                )
            ref_value = _metric_value(scores[reference], dataset, metric, reference)
            worse = regression(metric, value, ref_value, relative=relative)
            if worse > float(max_regression) + EPSILON:
                breaches.append(
                    Breach(
                        model,
                        dataset,
                        metric,
                        value,
                        float(max_regression),
                        "max_regression",
                        reference_model=reference,
                        reference_value=ref_value,
                        relative=relative,
                    )
                )
    return breaches


def _below_min(metric: str, value: float, min_score: float) -> bool:
    if metric in LOWER_IS_BETTER:
        return value > min_score + EPSILON
    return value < min_score - EPSILON


def _metric_value(
    per_dataset: Mapping[str, Mapping[str, float]], dataset: str, metric: str, model: str
) -> float:
    measured = per_dataset.get(dataset, {})
    if metric not in measured:
        raise LosslessError(
            f"gate on {dataset!r} uses metric {metric!r}, which was not measured for {model}",
            hint=f"measured metrics: {', '.join(sorted(measured)) or '(none)'}; "
            "add it to `metrics:` or pick another `metric:` (exact_match needs chat/instruction data)",
        )
    return float(measured[metric])
