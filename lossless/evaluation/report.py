"""How an eval is shown: a terminal table and `eval.json` with every number (the chart: chart.py).

Each model is compared with the reference model on every metric of every skill (a dataset or
an lm-eval task):
    role: old  → retention %: 100 × score / reference (for loss: 100 × reference / loss), so 100 %
                 means nothing was forgotten and 95 % means 5 % of the old skill is gone;
    role: new  → gain: score − reference (for loss: reference − loss), so > 0 means it learned.
The direction of a task's metric is lm-eval's own (`higher_is_better`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossless.evaluation.gates import Breach, Scores, gate_metric
from lossless.evaluation.metrics import ALL_METRICS
from lossless.evaluation.skills import SkillInfo, gain, is_metric, retention_pct


def changes(
    scores: Scores, reference: str | None, skills: Mapping[str, SkillInfo]
) -> dict[str, dict[str, dict[str, Any]]]:
    """model → skill → {"metric", "role", "retention_pct"} (old) or {..., "gain"} (new), on each
    skill's headline metric."""
    if reference is None or reference not in scores:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, per_skill in scores.items():
        if model == reference:
            continue
        for name, info in skills.items():
            change = _change(info, info.metric, per_skill, scores[reference])
            if change is not None:
                out.setdefault(model, {})[name] = {
                    "metric": info.metric,
                    "role": info.role,
                    **change,
                }
    return out


def _change(
    info: SkillInfo,
    metric: str,
    per_skill: Mapping[str, Mapping[str, float]],
    ref_scores: Mapping[str, Mapping[str, float]],
) -> dict[str, Any] | None:
    value = per_skill.get(info.name, {}).get(metric)
    ref = ref_scores.get(info.name, {}).get(metric)
    if value is None or ref is None:
        return None
    lower = info.lower_is_better(metric)
    if info.role == "new":
        return {"gain": gain(lower, value, ref)}
    return {"retention_pct": retention_pct(lower, value, ref)}


def metric_rows(scores: Scores, info: SkillInfo) -> list[str]:
    """The metrics shown for a skill: its headline first, then the others it has (in lm-eval's
    order for a task, loss / perplexity / exact_match for a dataset)."""
    seen: list[str] = []
    for per_skill in scores.values():
        seen += [k for k in per_skill.get(info.name, {}) if is_metric(k) and k not in seen]
    if not info.is_task:
        seen.sort(key=lambda k: ALL_METRICS.index(k) if k in ALL_METRICS else len(ALL_METRICS))
    return [info.metric] + [k for k in seen if k != info.metric] if info.metric in seen else seen


def render_table(
    scores: Scores,
    reference: str | None,
    skills: Mapping[str, SkillInfo],
    title: str,
    gates: Mapping[str, Mapping[str, Any]] | None = None,
    breaches: list[Breach] | None = None,
) -> Any:
    """A rich Table: a row per skill and metric, a column per model (value and its change)."""
    from rich.table import Table

    gates = gates or {}
    broken = {(b.model, b.dataset, b.metric) for b in breaches or []}
    table = Table(title=title)
    # Names never wrap. Past two models, a cell's change goes under its value, so four models
    # fit 80 columns without rich breaking "0.0100  1.0 %" at a space of its choosing.
    stacked = len(scores) > 2
    table.add_column("skill", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for model in scores:
        header = f"{model}\n(reference)" if model == reference else model
        table.add_column(header, justify="right")
    if gates:
        table.add_column("gate")
    for name, info in skills.items():
        gated = gate_metric(gates[name], info) if name in gates else None
        for i, metric in enumerate(metric_rows(scores, info)):
            arrow = "↓" if info.lower_is_better(metric) else "↑"
            cells = [f"{name} ({info.role})" if i == 0 else "", f"{metric} {arrow}"]
            for model, per_skill in scores.items():
                cell = _cell(info, metric, model, per_skill, scores, reference, broken)
                cells.append(cell.replace("  [", "\n[", 1) if stacked else cell)
            if gates:
                cells.append(_gate_text(gates[name]) if metric == gated else "")
            table.add_row(*cells)
    return table


def _cell(
    info: SkillInfo,
    metric: str,
    model: str,
    per_skill: Mapping[str, Mapping[str, float]],
    scores: Scores,
    reference: str | None,
    broken: set[tuple[str, str, str]],
) -> str:
    measured = per_skill.get(info.name, {})
    value = measured.get(metric)
    if value is None:
        return "-"
    cell = _number(value)
    stderr = measured.get(f"{metric.partition(',')[0]}_stderr")
    if stderr is not None:
        cell += f" ±{stderr:.3f}"
    if reference is None or model == reference or reference not in scores:
        return cell
    change = _change(info, metric, per_skill, scores[reference]) or {}
    bad = (model, info.name, metric) in broken
    if change.get("retention_pct") is not None:
        pct = change["retention_pct"]
        colour = "red" if bad else ("green" if pct >= 100 else "yellow")
        cell += f"  [{colour}]{pct:.1f} %[/{colour}]"
    elif "gain" in change:
        colour = "red" if bad else ("green" if change["gain"] > 0 else "yellow")
        cell += f"  [{colour}]{_number(change['gain'], sign=True)}[/{colour}]"
    return cell + (" ✗" if bad else "")


def _number(value: float, *, sign: bool = False) -> str:
    """0.6120, 2.3010, or 1.2539e+07 for a perplexity in the millions."""
    spec = "+" if sign else ""
    return f"{value:{spec}.4f}" if abs(value) < 1e5 else f"{value:{spec}.4e}"


def _gate_text(gate: Mapping[str, Any]) -> str:
    parts = []
    if gate.get("max_regression") is not None:
        limit = float(gate["max_regression"])
        relative = gate.get("relative", True)
        parts.append(
            f"max_regression {limit * 100:g} %" if relative else f"max_regression {limit:g}"
        )
    if gate.get("min_score") is not None:
        parts.append(f"min_score {float(gate['min_score']):g}")
    return ", ".join(parts)


def eval_payload(
    step_name: str,
    scores: Scores,
    reference: str | None,
    skills: Mapping[str, SkillInfo],
    breaches: list[Breach],
    lm_eval: Mapping[str, Any],
    gate_error: str | None = None,
) -> dict[str, Any]:
    """Everything `eval.json` holds: skills, scores, changes vs the reference, gates, lm-eval's
    own output per model (`lm_eval`: results, configs, versions, n-shot, ...)."""
    gates: dict[str, Any] = {
        "passed": not breaches and gate_error is None,
        "breaches": [
            {
                "model": b.model,
                "dataset": b.dataset,
                "metric": b.metric,
                "value": b.value,
                "rule": b.rule,
                "threshold": b.threshold,
                "reference_value": b.reference_value,
                "relative": b.relative,
                "message": b.message(),
            }
            for b in breaches
        ],
    }
    if gate_error is not None:
        gates["error"] = gate_error
    return {
        "step": step_name,
        "reference": reference,
        "datasets": {n: i.to_json() for n, i in skills.items() if not i.is_task},
        "tasks": {n: i.to_json() for n, i in skills.items() if i.is_task},
        "scores": {m: {d: dict(v) for d, v in per.items()} for m, per in scores.items()},
        "changes": changes(scores, reference, skills),
        "gates": gates,
        "lm_eval": dict(lm_eval),
    }


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    # NaN (a dataset with no answer tokens) is written as null so any JSON reader can load it.
    path.write_text(json.dumps(_no_nan(payload), indent=2, sort_keys=False) + "\n")
    return path


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Mapping):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
