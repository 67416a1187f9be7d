"""Checks of an eval step that the schema cannot express: what its gates name, its tasks.

A gate names a dataset of `data:` or a task of `tasks:` (one name per skill, so a name may not
be both); on a dataset its metric is one lossless computes (and, with `metrics:`, one it is
asked to), while a task's metrics are lm-eval's and known once it has run. Task settings
without `tasks:`, and `fewshot_as_multiturn` without `apply_chat_template`, do nothing: warned.
"""

from __future__ import annotations

from typing import Any

from lossless.errors import YamlPath
from lossless.evaluation.metrics import ALL_METRICS
from lossless.recipe.references import did_you_mean
from lossless.validation.checker import Checker

TASK_KEYS = (
    "num_fewshot",
    "include_path",
    "apply_chat_template",
    "fewshot_as_multiturn",
    "system_instruction",
    "limit",
    "log_samples",
)


def task_names(block: dict[str, Any]) -> list[tuple[int, str]]:
    """(index, name) of each well-formed entry of `tasks:`."""
    tasks = block.get("tasks")
    found = []
    for i, entry in enumerate(tasks if isinstance(tasks, list) else []):
        name = entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name:
            found.append((i, name))
    return found


def check_eval(c: Checker, d: int, p: YamlPath, block: dict[str, Any]) -> None:
    data: dict[str, Any] = block["data"] if isinstance(block.get("data"), dict) else {}
    tasks = task_names(block)
    names = [name for _, name in tasks]
    seen: set[str] = set()
    for i, name in tasks:
        where = (*p, "tasks", i)
        if name in seen:
            c.add(d, where, f"task `{name}` is listed twice", code="duplicate-task")
        elif name in data:
            c.add(
                d,
                where,
                f"`{name}` is both a dataset of `data` and a task of `tasks`",
                code="duplicate-skill",
                hint="rename the dataset: gates and reports name each skill once",
            )
        seen.add(name)
    _check_gates(c, d, p, block, data, names)
    _check_task_settings(c, d, p, block, bool(tasks))


def _check_gates(
    c: Checker, d: int, p: YamlPath, block: dict[str, Any], data: dict, tasks: list[str]
) -> None:
    gates = block.get("gate")
    measured = block.get("metrics") if isinstance(block.get("metrics"), list) else None
    for name, gate in (gates if isinstance(gates, dict) else {}).items():
        if name not in data and name not in tasks:
            skills = [*data, *tasks]
            c.add(
                d,
                (*p, "gate", name),
                f"gate `{name}` names no dataset of `data`"
                + (" nor task of `tasks`" if tasks else ""),
                at_key=True,
                code="unknown-dataset",
                hint=did_you_mean(name, skills)
                or f"datasets: {', '.join(data) or 'none'}"
                + (f"; tasks: {', '.join(tasks)}" if tasks else ""),
            )
            continue
        metric = gate.get("metric") if isinstance(gate, dict) else None
        if name not in data or not isinstance(metric, str):
            continue  # a task reports its own metrics
        if metric not in ALL_METRICS:
            c.add(
                d,
                (*p, "gate", name, "metric"),
                f"`{metric}` is not a metric of datasets",
                expected=", ".join(ALL_METRICS),
                got=metric,
                code="unknown-value",
                hint=did_you_mean(metric, ALL_METRICS)
                or "lm-eval metrics (acc, acc_norm) are gated on a task of `tasks`",
            )
        elif measured is not None and metric not in measured:
            c.add(
                d,
                (*p, "gate", name, "metric"),
                f"metric `{metric}` is not measured by this step",
                code="unmeasured-metric",
                hint=f"add it to `metrics:` (measured: {', '.join(map(str, measured))})",
            )


def _check_task_settings(
    c: Checker, d: int, p: YamlPath, block: dict[str, Any], has_tasks: bool
) -> None:
    for key in TASK_KEYS:
        if key in block and not has_tasks:
            c.add(
                d,
                (*p, key),
                f"`{key}` has no effect without `tasks:`",
                at_key=True,
                severity="warning",
                code="unused-setting",
                hint="it sets how lm-eval tasks run; datasets of `data` do not use it",
            )
    if block.get("fewshot_as_multiturn") is True and block.get("apply_chat_template") is not True:
        c.add(
            d,
            (*p, "fewshot_as_multiturn"),
            "`fewshot_as_multiturn` has no effect without `apply_chat_template: true`",
            at_key=True,
            severity="warning",
            code="unused-setting",
        )
    paths = block.get("include_path")
    for i, text in enumerate([paths] if isinstance(paths, str) else paths or []):
        if isinstance(text, str) and text in c.data_steps:  # a model step: semantic.py says it
            where = (*p, "include_path") if isinstance(paths, str) else (*p, "include_path", i)
            c.add(
                d,
                where,
                f"`{text}` is a `generate:` step; `include_path` is a folder of lm-eval task YAMLs",
                code="not-data",
                hint="write the folder's path, e.g. ./my_tasks",
            )
