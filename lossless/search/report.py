"""What a search leaves behind: trials.json, trials.csv, tradeoff.png and best.yaml.

trials.json holds every number (each trial's point, scores, objective, constraint values and
margins, feasible or not, its cache key); trials.csv is the same table flat, one row a trial;
tradeoff.png plots the objective against the worst constraint margin (right of 0: feasible);
best.yaml is the recipe with the searched stage set to its best point and no `search:` key.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lossless.recipe.model import MergeSearch
from lossless.search.loop import Trial


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf / nan


def trial_record(trial: Trial) -> dict[str, Any]:
    j = trial.judgement
    return {
        "trial": trial.number,
        "params": trial.point,
        "objective": _number(j.objective),
        "constraints": {
            name: {"value": _number(j.values[name]), "margin": _number(j.margins[name])}
            for name in j.margins
        },
        "worst_margin": _number(j.worst_margin),
        "feasible": j.feasible,
        "breaches": list(j.breaches),
        "key": trial.key,
        "cached": trial.cached,
    }


def payload(
    stage: str,
    search: MergeSearch,
    trials: Sequence[Trial],
    best: Trial | None,
    *,
    objective_metric: str,
    maximize: bool,
    reference_scores: Mapping[str, Any],
    scores: Mapping[int, Any],
) -> dict[str, Any]:
    return {
        "stage": stage,
        "eval": search.eval,
        "sampler": search.sampler,
        "seed": search.seed,
        "objective": {
            "dataset": search.objective.dataset,
            "metric": objective_metric,
            "goal": "maximize" if maximize else "minimize",
        },
        "constraints": {k: dict(v) for k, v in search.constraints.items()},
        "reference": {"model": str(search.measure.reference), "scores": reference_scores},
        "best": best.number if best is not None and best.judgement.feasible else None,
        "trials": [{**trial_record(t), "scores": scores.get(t.number, {})} for t in trials],
    }


def _write(path: Path, text: str) -> Path:
    """Write beside, then rename: a reader never sees half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_tables(out_dir: Path, data: Mapping[str, Any]) -> tuple[Path, Path]:
    """trials.json (every number) and trials.csv (one row a trial) into `out_dir`."""
    json_path = _write(out_dir / "trials.json", json.dumps(data, indent=2) + "\n")
    trials = data["trials"]
    params = list(trials[0]["params"]) if trials else []
    constraints = list(data["constraints"])
    objective = data["objective"]
    header = ["trial", *params, f"{objective['dataset']} {objective['metric']}"]
    header += [f"{c} {kind}" for c in constraints for kind in ("value", "margin")]
    header += ["worst_margin", "feasible", "best", "key"]
    rows = []
    for t in trials:
        row = [t["trial"], *(json.dumps(t["params"][p]) for p in params), t["objective"]]
        row += [t["constraints"][c][k] for c in constraints for k in ("value", "margin")]
        row += [t["worst_margin"], t["feasible"], t["trial"] == data["best"], t["key"]]
        rows.append(row)
    csv_path = out_dir / "trials.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with (out_dir / ".trials.csv.tmp").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(out_dir / ".trials.csv.tmp", csv_path)
    return json_path, csv_path


def write_tradeoff(path: Path, data: Mapping[str, Any]) -> tuple[Path | None, str | None]:
    """Objective vs worst constraint margin → (path, None), or (None, why there is no chart)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None, "no trade-off plot: matplotlib is not installed (pip install matplotlib)"
    trials = [t for t in data["trials"] if t["objective"] is not None]
    constrained = bool(data["constraints"])

    def x_of(t: Mapping[str, Any]) -> float:
        if not constrained:
            return float(t["trial"])
        return t["worst_margin"] if t["worst_margin"] is not None else -1.0

    fig = Figure(figsize=(6.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for feasible, marker, color, label in (
        (True, "o", "tab:blue", "feasible"),
        (False, "x", "tab:gray", "infeasible"),
    ):
        group = [t for t in trials if t["feasible"] == feasible]
        if group:
            xs, ys = [x_of(t) for t in group], [t["objective"] for t in group]
            ax.scatter(xs, ys, marker=marker, color=color, label=label)
    best = next((t for t in trials if t["trial"] == data["best"]), None)
    if best is not None:
        ax.scatter(
            [x_of(best)],
            [best["objective"]],
            marker="*",
            s=260,
            color="tab:red",
            label=f"best (trial {best['trial']})",
            zorder=3,
        )
    if constrained:
        ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlabel("worst constraint margin (≥ 0: every constraint holds)")
    else:
        ax.set_xlabel("trial")
    objective = data["objective"]
    ax.set_ylabel(f"{objective['dataset']} {objective['metric']} ({objective['goal']})")
    ax.set_title(f"merge search {data['stage']}: {len(data['trials'])} trials")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path, None


def best_recipe_text(
    documents: Sequence[Mapping[str, Any]],
    index: int,
    best_document: Mapping[str, Any],
    *,
    header: Sequence[str],
) -> str:
    """The recipe's documents with document `index` replaced, as YAML under a comment header."""
    import yaml

    docs = [dict(best_document) if i == index else dict(d) for i, d in enumerate(documents)]
    body = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + body
