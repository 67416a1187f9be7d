"""lm-eval's `simple_evaluate` output → one score row per task the recipe named.

Pure data in, pure data out (no lm_eval import), so it is tested on a results dict recorded from a
real run. What it reads from the output (lm-eval 0.4):

    results           {task: {"alias": .., "sample_len": 4, "acc,none": 0.75, "acc_stderr,none": ..}}
                      (groups too, with their aggregate metrics)
    group_subtasks    {group: [its tasks]}: a requested group is one row, its members are not
    higher_is_better  {task: {"acc": True}}: the direction of each metric
    n-shot            {task: 5}: the few-shot count it ran with

A name that is neither a task nor a group (an lm-eval tag, which expands to its tasks) has no
entry of its own: each task it brought in becomes a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lossless.evaluation.skills import TASK_FORMAT, SkillInfo, is_metric, normalise_metric

# The parts of an lm-eval output kept in eval.json (`samples` are big and kept apart, on request;
# environment dumps and git hashes say nothing about the model).
KEPT = (
    "results",
    "groups",
    "group_subtasks",
    "configs",
    "versions",
    "n-shot",
    "higher_is_better",
    "n-samples",
    "config",
    "lm_eval_version",
    "transformers_version",
)


@dataclass(frozen=True)
class TaskScore:
    """One row: a task's metrics under skill names (`acc`, `exact_match,strict-match`)."""

    name: str
    scores: dict[str, float]  # metric → value, standard errors as `acc_stderr`
    higher: dict[str, bool] = field(default_factory=dict)  # base metric → higher is better
    num_fewshot: int | None = None

    @property
    def metrics(self) -> list[str]:
        """The metrics in lm-eval's order (the task's `metric_list`); the first is the headline."""
        return [k for k in self.scores if is_metric(k)]


def merge_outputs(outputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several `simple_evaluate` outputs (one per few-shot setting) as one: per-task maps joined."""
    merged: dict[str, Any] = {}
    for output in outputs:
        for key in KEPT:
            value = output.get(key)
            if isinstance(value, Mapping) and key != "config":
                merged.setdefault(key, {}).update(value)
            elif value is not None:
                merged.setdefault(key, value)
    return merged


def row_names(output: Mapping[str, Any], requested: Sequence[str]) -> list[str]:
    """The tasks and groups that get a row: those requested, then what a tag brought in."""
    results = output.get("results") or {}
    subtasks = output.get("group_subtasks") or {}
    covered: set[str] = set()
    pending = [name for name in requested if name in results]
    while pending:  # the members of requested groups, transitively
        name = pending.pop()
        for member in subtasks.get(name, []):
            if member not in covered:
                covered.add(member)
                pending.append(member)
    rows = [name for name in requested if name in results]
    rows += [name for name in results if name not in rows and name not in covered]
    return rows


def task_scores(output: Mapping[str, Any], requested: Sequence[str]) -> dict[str, TaskScore]:
    """Each row's numbers: `acc,none` → `acc`; strings (`alias`) and counts dropped."""
    results = output.get("results") or {}
    directions = output.get("higher_is_better") or {}
    shots = output.get("n-shot") or {}
    rows: dict[str, TaskScore] = {}
    for name in row_names(output, requested):
        values = results[name]
        scores = {
            normalise_metric(key): float(value)
            for key, value in values.items()
            if "," in key and isinstance(value, int | float) and not isinstance(value, bool)
        }
        higher = {str(k): bool(v) for k, v in (directions.get(name) or {}).items()}
        shot = shots.get(name)
        rows[name] = TaskScore(
            name, scores, higher, int(shot) if isinstance(shot, int | float) else None
        )
    return rows


def task_skills(rows: Mapping[str, TaskScore], roles: Mapping[str, str]) -> dict[str, SkillInfo]:
    """A skill per row, as the reference measured it: its headline is its first metric; a row a
    tag brought in has the role of no entry (old)."""
    return {
        name: SkillInfo(
            name,
            "",
            TASK_FORMAT,
            roles.get(name, "old"),
            row.metrics[0] if row.metrics else "",
            higher=row.higher,
            num_fewshot=row.num_fewshot,
        )
        for name, row in rows.items()
    }


def plain(value: Any) -> Any:
    """JSON-ready: tuples as lists, anything else unknown (a task's `!function`) as its text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
