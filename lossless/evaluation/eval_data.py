"""What an eval step reads before any model is loaded: its metrics, its datasets (each read once,
its format detected) and the mistakes in its gates that can be found from those alone.

Kept apart from `steps/eval.py` (which loads models and scores them) so the cheap checks that
must run first live in one place: `prepare_inputs` and `run_eval` both start here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.evaluation.gates import default_metric
from lossless.evaluation.metrics import ALL_METRICS, EXACT_MATCH_FORMATS
from lossless.evaluation.skills import SkillInfo
from lossless.recipe.model import EvalStep

if TYPE_CHECKING:
    from lossless.evaluation.harness import HarnessSettings


def eval_metrics(step: EvalStep) -> tuple[str, ...]:
    metrics = tuple(str(m) for m in step.settings.get("metrics") or ALL_METRICS)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise LosslessError(
            f"eval.{step.name}.metrics: unknown metric(s) {', '.join(unknown)}",
            hint=f"choose from {', '.join(ALL_METRICS)}",
        )
    return metrics


def load_eval_datasets(
    step: EvalStep, recipe_dir: Path, quiet: bool = False
) -> tuple[dict[str, SkillInfo], dict[str, list[dict[str, Any]]]]:
    """Each `data:` entry (a file, a dataset directory, a hub dataset at its pinned commit) read
    once (rows shared by every model), its format detected."""
    from lossless.recipe.references import data_kind
    from lossless.training.datasets import detect_format, load_source
    from lossless.training.settings import DataSource

    default_max = step.settings.get("max_samples")
    metrics = eval_metrics(step)
    infos: dict[str, SkillInfo] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, spec in step.data.items():
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        where = f"eval.{step.name}.data.{name}"
        source = DataSource(
            spec["path"],
            split=spec.get("split"),
            subset=spec.get("subset"),
            revision=spec.get("revision"),
        )
        local = Path(source.path)
        local = local if local.is_absolute() else recipe_dir / local
        if data_kind(source.path, (), recipe_dir) != "hub" and not local.exists():
            raise LosslessError(
                f"{where}: data file {local} does not exist",
                hint="paths are relative to the recipe's directory; a hub dataset is `org/name`",
            )
        data, path = load_source(source, recipe_dir, quiet=quiet)
        limit = spec.get("max_samples", default_max)
        data = data[: int(limit)] if limit else data
        fmt = spec.get("format") or "auto"
        if fmt == "auto":
            fmt = detect_format(data, path)
        metric = default_metric(fmt)
        if metric not in metrics:  # e.g. metrics: [loss] on chat data
            metric = "loss" if "loss" in metrics else metrics[0]
        infos[name] = SkillInfo(name, str(path), fmt, str(spec.get("role", "old")), metric)
        rows[name] = data
    return infos, rows


def precheck_gates(
    step: EvalStep,
    datasets: Mapping[str, SkillInfo],
    metrics: tuple[str, ...],
    harness: HarnessSettings | None,
) -> None:
    """Gate mistakes found before any model is loaded (check_gates would find them only after).

    A gate on a task can only name a task of `tasks:` here; which metrics it reports is known
    once lm-eval has run it."""
    tasks = [t.name for t in harness.tasks] if harness is not None else []
    for name, gate in step.gate.items():
        where = f"eval.{step.name}.gate.{name}"
        if name in tasks and name not in datasets:
            continue
        if name not in datasets:
            raise LosslessError(
                f"{where}: no dataset {name!r} in this step's `data:` nor task in its `tasks:`",
                hint=f"gate one of: {', '.join([*datasets, *tasks]) or '(none)'}",
            )
        metric = str(gate.get("metric") or default_metric(datasets[name].format))
        if metric not in metrics:
            raise LosslessError(
                f"{where}: metric {metric!r} is not measured",
                hint=f"add it to `metrics:` (measured: {', '.join(metrics)})",
            )
        if metric == "exact_match" and datasets[name].format not in EXACT_MATCH_FORMATS:
            raise LosslessError(
                f"{where}: exact_match needs prompts and answers, but {name!r} is "
                f"{datasets[name].format} data",
                hint="gate it on `metric: loss` instead",
            )
