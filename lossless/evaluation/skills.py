"""What an eval step measures: its skills, each a held-out dataset or an lm-eval task.

A skill has a role (`old`: retention is what matters; `new`: the gain), a headline metric (what
the report and a gate use when none is named) and a direction per metric. Datasets are scored
by `metrics.py` (loss and perplexity: lower is better; exact_match: higher); an lm-eval task
reports its own direction per metric (`higher_is_better` in its results), which is used as is,
so an error rate or a perplexity task is judged the right way round.

lm-eval names a metric `metric,filter` (`acc,none`, `exact_match,strict-match`); a skill's
scores use `normalise_metric`'s names: the filter is dropped when it is `none` (`acc`), kept
otherwise (`exact_match,strict-match`), so `metric: acc` in a gate names what lm-eval calls
`acc,none`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Dataset metrics where a smaller number is better; exact_match is higher-is-better.
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
TASK_FORMAT = "lm-eval"  # the `format` of a skill that is an lm-eval task
# Counts stored beside the metrics (how many examples and tokens a score rests on).
COUNTS = frozenset({"examples", "tokens"})


def default_metric(fmt: str) -> str:
    """The metric a dataset is judged on when none is named: what its data can judge best."""
    return "exact_match" if fmt in ("chat", "instruction") else "loss"


def normalise_metric(key: str) -> str:
    """`acc,none` → `acc`; `exact_match,strict-match` stays; `acc` stays."""
    name, _, filter_name = key.partition(",")
    return name if filter_name in ("", "none") else key


def is_metric(key: str) -> bool:
    """A score that judges a model: not a count (`examples`) nor a standard error (`acc_stderr`)."""
    return key not in COUNTS and "_stderr" not in base_metric(key)


def base_metric(metric: str) -> str:
    """The metric without its lm-eval filter: `exact_match,strict-match` → `exact_match`."""
    return metric.partition(",")[0]


def retention_pct(lower_is_better: bool, value: float, reference: float) -> float | None:
    """acc 0.72 vs 0.80 → 90.0; loss 2.5 vs 2.0 → 80.0; None when the ratio is undefined."""
    if lower_is_better:
        return 100.0 * reference / value if value else None
    return 100.0 * value / reference if reference else None


def gain(lower_is_better: bool, value: float, reference: float) -> float:
    """acc 0.60 vs 0.20 → +0.40; loss 1.5 vs 2.0 → +0.5 (loss went down by 0.5)."""
    return reference - value if lower_is_better else value - reference


@dataclass(frozen=True)
class SkillInfo:
    """One dataset or lm-eval task of an eval step, as the report and the gates see it."""

    name: str
    path: str  # the data file, or "" for a task
    format: str  # chat | instruction | completion | text | lm-eval
    role: str  # old | new
    metric: str  # the headline metric, e.g. "exact_match", "acc"
    # A task's directions as lm-eval reports them: {"acc": True, "perplexity": False}.
    higher: Mapping[str, bool] = field(default_factory=dict)
    num_fewshot: int | None = None  # a task's few-shot count as run

    @property
    def is_task(self) -> bool:
        return self.format == TASK_FORMAT

    def lower_is_better(self, metric: str) -> bool:
        base = base_metric(metric)
        if base in self.higher:
            return not self.higher[base]
        return base in LOWER_IS_BETTER

    def to_json(self) -> dict[str, Any]:
        if self.is_task:
            return {
                "role": self.role,
                "metric": self.metric,
                "num_fewshot": self.num_fewshot,
                "higher_is_better": dict(self.higher),
            }
        return {"path": self.path, "format": self.format, "role": self.role, "metric": self.metric}


def dataset_skills(formats: Mapping[str, str]) -> dict[str, SkillInfo]:
    """Datasets known only by their format (a merge search's view): default metric, role old."""
    return {n: SkillInfo(n, "", fmt, "old", default_metric(fmt)) for n, fmt in formats.items()}


def saved_skills(payload: Mapping[str, Any]) -> dict[str, SkillInfo]:
    """The skills recorded in an `eval.json` (its `datasets` and `tasks`)."""
    skills = {
        name: SkillInfo(name, str(i["path"]), str(i["format"]), str(i["role"]), str(i["metric"]))
        for name, i in payload["datasets"].items()
    }
    for name, i in (payload.get("tasks") or {}).items():
        skills[name] = SkillInfo(
            name,
            "",
            TASK_FORMAT,
            str(i["role"]),
            str(i["metric"]),
            higher={str(k): bool(v) for k, v in (i.get("higher_is_better") or {}).items()},
            num_fewshot=i.get("num_fewshot"),
        )
    return skills
