"""How an eval is shown: a terminal table, `eval.json` with every number, a grouped bar chart.

Each model is compared with the reference model on each dataset's headline metric (exact_match for
chat/instruction data, loss otherwise):
    role: old  → retention %: 100 × score / reference (for loss: 100 × reference / loss), so 100 %
                 means nothing was forgotten and 95 % means 5 % of the old skill is gone;
    role: new  → gain: score − reference (for loss: reference − loss), so > 0 means it learned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.evaluation.gates import LOWER_IS_BETTER, Breach, Scores


@dataclass(frozen=True)
class DatasetInfo:
    """What the report needs to know about one dataset of an eval step."""

    name: str
    path: str
    format: str  # chat | instruction | completion | text
    role: str  # old | new
    metric: str  # the headline metric, e.g. "exact_match"


def retention_pct(metric: str, value: float, reference: float) -> float | None:
    """exact_match 0.72 vs 0.80 → 90.0; loss 2.5 vs 2.0 → 80.0; None when the ratio is undefined."""
    if metric in LOWER_IS_BETTER:
        return 100.0 * reference / value if value else None
    return 100.0 * value / reference if reference else None


def gain(metric: str, value: float, reference: float) -> float:
    """exact_match 0.60 vs 0.20 → +0.40; loss 1.5 vs 2.0 → +0.5 (loss went down by 0.5)."""
    return reference - value if metric in LOWER_IS_BETTER else value - reference


def changes(
    scores: Scores, reference: str | None, datasets: Mapping[str, DatasetInfo]
) -> dict[str, dict[str, dict[str, Any]]]:
    """model → dataset → {"metric", "retention_pct"} (old) or {"metric", "gain"} (new)."""
    if reference is None or reference not in scores:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, per_dataset in scores.items():
        if model == reference:
            continue
        for name, info in datasets.items():
            value = per_dataset.get(name, {}).get(info.metric)
            ref = scores[reference].get(name, {}).get(info.metric)
            if value is None or ref is None:
                continue
            entry: dict[str, Any] = {"metric": info.metric, "role": info.role}
            if info.role == "new":
                entry["gain"] = gain(info.metric, value, ref)
            else:
                entry["retention_pct"] = retention_pct(info.metric, value, ref)
            out.setdefault(model, {})[name] = entry
    return out


def render_table(
    scores: Scores, reference: str | None, datasets: Mapping[str, DatasetInfo], title: str
) -> Any:
    """A rich Table: one row per model, one column per dataset, headline metric and its change."""
    from rich.table import Table

    delta = changes(scores, reference, datasets)
    table = Table(title=title)
    table.add_column("model")
    for info in datasets.values():
        table.add_column(f"{info.name}\n{info.metric} ({info.role})", justify="right")
    for model, per_dataset in scores.items():
        cells = [f"{model} (reference)" if model == reference else model]
        for name, info in datasets.items():
            value = per_dataset.get(name, {}).get(info.metric)
            cell = "-" if value is None else f"{value:.4f}"
            change = delta.get(model, {}).get(name, {})
            if change.get("retention_pct") is not None:
                pct = change["retention_pct"]
                colour = "green" if pct >= 100 else "red"
                cell += f"  [{colour}]{pct:.1f} %[/{colour}]"
            elif "gain" in change:
                colour = "green" if change["gain"] >= 0 else "red"
                cell += f"  [{colour}]{change['gain']:+.4f}[/{colour}]"
            cells.append(cell)
        table.add_row(*cells)
    return table


def eval_payload(
    step_name: str,
    scores: Scores,
    reference: str | None,
    datasets: Mapping[str, DatasetInfo],
    breaches: list[Breach],
    tasks: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything `eval.json` holds: scores, changes vs the reference, gates, lm_eval results."""
    return {
        "step": step_name,
        "reference": reference,
        "datasets": {
            name: {"path": i.path, "format": i.format, "role": i.role, "metric": i.metric}
            for name, i in datasets.items()
        },
        "scores": {m: {d: dict(v) for d, v in per.items()} for m, per in scores.items()},
        "changes": changes(scores, reference, datasets),
        "gates": {
            "passed": not breaches,
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
        },
        "tasks": dict(tasks),
    }


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    # NaN (a dataset with no answer tokens) is written as null so any JSON reader can load it.
    path.write_text(json.dumps(_no_nan(payload), indent=2, sort_keys=False) + "\n")
    return path


def write_chart(
    path: Path, scores: Scores, datasets: Mapping[str, DatasetInfo], title: str
) -> tuple[Path | None, str | None]:
    """A grouped bar chart (datasets on x, one bar per model) → (path, None) or (None, why not)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None, "no chart: matplotlib is not installed (pip install matplotlib)"

    models = list(scores)
    names = list(datasets)
    width = 0.8 / max(1, len(models))
    fig = Figure(figsize=(max(4.0, 1.6 * len(names) * max(1, len(models)) ** 0.5), 3.6))
    FigureCanvasAgg(fig)  # attaches itself to the figure; no global pyplot state
    ax = fig.add_subplot()
    for m, model in enumerate(models):
        heights = [scores[model].get(n, {}).get(datasets[n].metric, 0.0) for n in names]
        positions = [i + (m - (len(models) - 1) / 2) * width for i in range(len(names))]
        ax.bar(positions, heights, width=width, label=model)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{n}\n{datasets[n].metric} ({datasets[n].role})" for n in names])
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path, None


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Mapping):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
