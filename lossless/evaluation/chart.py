"""`eval.png`: how much of each old skill every model kept, and what it learned, with the gates.

`chart_data` is pure (the numbers the picture shows, tested without matplotlib); `write_chart`
draws them:

    left panel    old skills: retention % per skill and model (100 % = the reference's score;
                  for a lower-is-better metric 100 × reference / value), a stem from 100 % to
                  each model's point, each gate as a dashed line at the retention it allows
                  (max_regression 0.05 → 95 %; on loss 100 / 1.05 = 95.2 %)
    right panels  new skills, one panel each in the metric's own units (exact_match and loss
                  never share an axis): every model's value, the reference's included, its gain
                  written above it, min_score and max_regression as dashed lines

Each skill is drawn on its gated metric, or its headline metric when it has no gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.evaluation.gates import Breach, Scores, gate_metric
from lossless.evaluation.skills import SkillInfo, gain, retention_pct


@dataclass(frozen=True)
class GateLine:
    """A gate's threshold on a panel's axis: retention % (old skills) or the metric (new)."""

    label: str  # "max_regression 5 %", "min_score 0.5"
    value: float


@dataclass(frozen=True)
class OldSkill:
    name: str
    metric: str
    retention: dict[str, float | None]  # model → retention % (None: the reference scored 0)
    lines: tuple[GateLine, ...]
    breached: frozenset[str]  # models that failed this skill's gate


@dataclass(frozen=True)
class NewSkill:
    name: str
    metric: str
    lower_is_better: bool
    values: dict[str, float]  # model → value, the reference first
    gains: dict[str, float]  # model → value − reference (reference − value when lower is better)
    lines: tuple[GateLine, ...]
    breached: frozenset[str]


@dataclass(frozen=True)
class ChartData:
    reference: str
    models: tuple[str, ...]  # the evaluated models, the reference left out
    old: tuple[OldSkill, ...]
    new: tuple[NewSkill, ...]


def _value_bounds(gate: Mapping[str, Any], lower: bool, ref: float) -> list[tuple[str, float]]:
    """Each rule of a gate as the worst value it allows, in the metric's units."""
    sign = 1.0 if lower else -1.0  # the direction "worse" goes
    bounds = []
    limit = gate.get("max_regression")
    if limit is not None:
        if gate.get("relative", True):
            bounds.append((f"max_regression {float(limit) * 100:g} %", ref * (1 + sign * limit)))
        else:
            bounds.append((f"max_regression {float(limit):g} (absolute)", ref + sign * limit))
    if gate.get("min_score") is not None:
        bounds.append((f"min_score {float(gate['min_score']):g}", float(gate["min_score"])))
    return bounds


def chart_data(
    scores: Scores,
    reference: str,
    skills: Mapping[str, SkillInfo],
    gates: Mapping[str, Mapping[str, Any]],
    breaches: list[Breach],
) -> ChartData:
    """What `write_chart` draws, as numbers."""
    models = tuple(m for m in scores if m != reference)
    ref_scores = scores.get(reference, {})
    old: list[OldSkill] = []
    new: list[NewSkill] = []
    for name, skill in skills.items():
        gate = gates.get(name) or {}
        metric = gate_metric(gate, skill) if gate else skill.metric
        ref = ref_scores.get(name, {}).get(metric)
        if ref is None:
            continue
        lower = skill.lower_is_better(metric)
        values = {m: scores[m][name][metric] for m in models if metric in scores[m].get(name, {})}
        breached = frozenset(b.model for b in breaches if b.dataset == name)
        bounds = _value_bounds(gate, lower, ref)
        if skill.role == "new":
            new.append(
                NewSkill(
                    name,
                    metric,
                    lower,
                    {reference: ref, **values},
                    {m: gain(lower, v, ref) for m, v in values.items()},
                    tuple(GateLine(label, value) for label, value in bounds),
                    breached,
                )
            )
            continue
        lines = []
        for label, bound in bounds:
            pct = retention_pct(lower, bound, ref)
            if pct is not None:
                lines.append(GateLine(label, pct))
        old.append(
            OldSkill(
                name,
                metric,
                {m: retention_pct(lower, v, ref) for m, v in values.items()},
                tuple(lines),
                breached,
            )
        )
    return ChartData(reference, models, tuple(old), tuple(new))


def write_chart(path: Path, data: ChartData, title: str) -> tuple[Path | None, str | None]:
    """Draw `data` into `path` → (path, None), or (None, why not) without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None, "no chart: matplotlib is not installed (pip install matplotlib)"

    widths = ([max(2.5, 1.3 * len(data.old))] if data.old else []) + [2.6] * len(data.new)
    fig = Figure(figsize=(max(5.0, sum(widths) + 1.5), 4.2))
    FigureCanvasAgg(fig)  # attaches itself to the figure; no global pyplot state
    axes = fig.subplots(1, len(widths), width_ratios=widths, squeeze=False)[0] if widths else []
    colours = {m: f"C{i}" for i, m in enumerate((data.reference, *data.models))}
    if data.old:
        _draw_old(axes[0], data, colours)
    for ax, skill in zip(axes[1 if data.old else 0 :], data.new, strict=True):
        _draw_new(ax, skill, data.reference, colours)
    if not widths:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "nothing to compare", ha="center", va="center")
    fig.suptitle(title, fontsize="medium")
    handles = [_patch(colours[m], m) for m in data.models]
    if data.new:  # the reference has a bar of its own there
        handles.insert(0, _patch(colours[data.reference], f"{data.reference} (reference)"))
    if handles:
        fig.legend(
            handles=handles, loc="lower center", ncols=min(4, len(handles)), fontsize="small"
        )
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    fig.savefig(path, format="png", dpi=100)
    return path, None


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


def _draw_old(ax: Any, data: ChartData, colours: Mapping[str, str]) -> None:
    n = max(1, len(data.models))
    step = 0.7 / n
    shown: list[float] = [100.0]
    for i, skill in enumerate(data.old):
        for m, model in enumerate(data.models):
            pct = skill.retention.get(model)
            if pct is None:
                continue
            x = i + (m - (n - 1) / 2) * step
            broke = model in skill.breached
            ax.vlines(x, 100, pct, colors=colours[model], linewidth=3)
            ax.plot(
                [x], [pct], "o", color=colours[model], markeredgecolor="red" if broke else "white"
            )
            ax.annotate(
                f"{pct:.1f}" + (" ✗" if broke else ""),
                (x, pct),
                textcoords="offset points",
                xytext=(0, 6 if pct >= 100 else -12),
                ha="center",
                fontsize="x-small",
                color="red" if broke else "black",
            )
            shown.append(pct)
        for line in skill.lines:
            ax.hlines(line.value, i - 0.45, i + 0.45, colors="black", linestyles="dashed")
            ax.annotate(
                f"gate {line.value:.1f} %",
                (i + 0.45, line.value),
                textcoords="offset points",
                xytext=(0, 2),
                ha="right",
                fontsize="xx-small",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
            )
            shown.append(line.value)
    ax.axhline(100, color="grey", linewidth=0.8)
    low, high = min(shown), max(shown)
    pad = max(2.0, 0.12 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(-0.6, len(data.old) - 0.4)
    ax.set_xticks(range(len(data.old)))
    ax.set_xticklabels([f"{s.name}\n{s.metric}" for s in data.old], fontsize="small")
    ax.set_ylabel(f"retention % (100 = {data.reference})")
    ax.set_title("kept: old skills vs the reference", fontsize="small")


def _draw_new(ax: Any, skill: NewSkill, reference: str, colours: Mapping[str, str]) -> None:
    models = list(skill.values)
    xs = range(len(models))
    ax.bar(xs, [skill.values[m] for m in models], color=[colours[m] for m in models])
    for x, model in zip(xs, models, strict=True):
        value = skill.values[model]
        text = f"{value:.3g}" if model == reference else f"{skill.gains[model]:+.3g}"
        broke = model in skill.breached
        ax.annotate(
            text + (" ✗" if broke else ""),
            (x, value),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize="x-small",
            color="red" if broke else "black",
        )
    for line in skill.lines:
        ax.axhline(line.value, color="black", linestyle="dashed", linewidth=1)
        ax.annotate(
            line.label if line.label.startswith("min_score") else f"{line.label}: {line.value:.3g}",
            (-0.45, line.value),
            textcoords="offset points",
            xytext=(0, 2),
            fontsize="xx-small",
        )
    top = max([*skill.values.values(), *(line.value for line in skill.lines), 0.0])
    ax.set_ylim(min(0.0, *skill.values.values()), top * 1.2 if top > 0 else 1.0)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(["reference" if m == reference else m for m in models], fontsize="x-small")
    arrow = "lower is better" if skill.lower_is_better else "higher is better"
    ax.set_ylabel(f"{skill.metric} ({arrow})", fontsize="small")
    ax.set_title(f"learned: {skill.name}", fontsize="small")
