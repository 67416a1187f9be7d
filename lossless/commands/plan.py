"""`lossless plan RECIPE`: the step DAG in run order, each step's kind, inputs and outputs.

`describe_plan` is the one description both the text table and `--format json` render, so the
integrator can add freshness and resolved parameters in one place.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lossless.errors import RecipeInvalid
from lossless.recipe import ApplyStep, EvalStep, MergeStep, Recipe, Step, TrainStep


def _summary(step: Step) -> str:
    if isinstance(step, TrainStep):
        return f"{step.method}" + (f" on {step.base}" if step.base else " from scratch")
    if isinstance(step, ApplyStep):
        return f"{len(step.adapters)} adapter(s) onto {step.to}"
    if isinstance(step, MergeStep):
        count = len(step.models) or sum(len(s.sources) for s in step.slices)
        return f"{step.merge_method} of {count} input(s)" + (
            f", base {step.base_model}" if step.base_model else ""
        )
    if isinstance(step, EvalStep):
        return f"{len(step.models)} model(s) on {len(step.data)} dataset(s)"
    return ""


def _outputs(step: Step) -> list[str]:
    if isinstance(step, TrainStep):
        return ["model (full weights)" if step.method == "full" else "adapter"]
    if isinstance(step, ApplyStep):
        return ["model" if step.save else "model (lazy view)"]
    if isinstance(step, MergeStep):
        return ["model"]
    return ["report"]


def describe_plan(recipe: Recipe) -> list[dict[str, Any]]:
    """One dict per step in run order: name, kind, summary, inputs (role/ref/kind), outputs."""
    from lossless.graph import step_refs, topological_steps

    names = recipe.step_names
    plan = []
    for step in topological_steps(recipe):
        inputs = [
            {"role": role, "ref": str(ref), "kind": "step" if ref.name in names else "external"}
            for role, ref in step_refs(step)
        ]
        plan.append(
            {
                "name": step.name,
                "kind": step.kind,
                "summary": _summary(step),
                "inputs": inputs,
                "needs": sorted({i["ref"].split("+")[0] for i in inputs if i["kind"] == "step"}),
                "outputs": _outputs(step),
            }
        )
    return plan


def render_dot(recipe: Recipe) -> str:
    from lossless.graph import build_graph, external_refs

    graph = build_graph(recipe)
    lines = ["digraph recipe {", "  rankdir=LR;", "  node [shape=box];"]
    for name, data in graph.nodes(data=True):
        lines.append(f'  "{name}" [label="{name}\\n({data["step"].kind})"];')
    for ref in external_refs(recipe):
        lines.append(f'  "{ref}" [shape=ellipse, style=dashed];')
    for src, dst in graph.edges:
        lines.append(f'  "{src}" -> "{dst}";')
    from lossless.graph import step_refs

    for step in recipe.steps:
        for _, ref in step_refs(step):
            if ref.name not in recipe.step_names:
                lines.append(
                    f'  "{ref.name if not ref.revision else f"{ref.name}@{ref.revision}"}" -> "{step.name}";'
                )
    lines.append("}")
    return "\n".join(dict.fromkeys(lines))  # an external model used twice by a step: one edge


def render_text(plan: list[dict[str, Any]]) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title="plan (run order)", show_lines=False)
    for column in ("#", "step", "kind", "what", "inputs", "outputs"):
        table.add_column(column)
    for i, row in enumerate(plan, start=1):
        inputs = "\n".join(f"{x['role']}: {x['ref']}" for x in row["inputs"])
        table.add_row(
            str(i), row["name"], row["kind"], row["summary"], inputs, ", ".join(row["outputs"])
        )
    buffer = StringIO()
    Console(file=buffer, width=140, no_color=True).print(table)
    return buffer.getvalue().rstrip()


def main(args: argparse.Namespace) -> int:
    from lossless.render import render_problems
    from lossless.validate import load_recipe

    try:
        recipe, warnings = load_recipe(args.recipe)
    except RecipeInvalid as invalid:
        print(render_problems(invalid.problems, "text"))
        return 2
    if args.format == "dot":
        print(render_dot(recipe))
    elif args.format == "json":
        print(json.dumps(describe_plan(recipe), indent=2))
    else:
        if warnings:
            print(render_problems(warnings, "text") + "\n")
        print(render_text(describe_plan(recipe)))
    return 0
