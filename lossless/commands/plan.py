"""`lossless plan RECIPE`: the step DAG in run order, each step's kind, inputs and outputs.

`describe_plan` is the one description both the text table and `--format json` render, so the
integrator can add freshness and resolved parameters in one place.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lossless.recipe.model import (
    ApplyStep,
    EvalStep,
    GenerateStep,
    MergeStep,
    Recipe,
    Step,
    TrainStep,
)


def _summary(step: Step) -> str:
    if isinstance(step, GenerateStep):
        rows = f"{step.samples} chat row(s)" if step.samples else "one chat row per prompt"
        how = f"answering {step.prompts}" if step.prompts else "Magpie (self-written prompts)"
        text = f" + {step.text_samples} text row(s)" if step.text_samples else ""
        return f"{rows}{text} from {step.model}, {how}"
    if isinstance(step, TrainStep):
        return f"{step.method}" + (f" on {step.base}" if step.base else " from scratch")
    if isinstance(step, ApplyStep):
        return f"{len(step.adapters)} adapter(s) onto {step.to}"
    if isinstance(step, MergeStep):
        count = len(step.models) or sum(len(s.sources) for s in step.slices)
        summary = f"{step.merge_method} of {count} input(s)" + (
            f", base {step.base_model}" if step.base_model else ""
        )
        return summary + (f"; {_search_summary(step)}" if step.search else "")
    if isinstance(step, EvalStep):
        return f"{len(step.models)} model(s) on {len(step.data)} dataset(s)"
    return ""


def _search_summary(step: MergeStep) -> str:
    """E.g. `search: grid, 6 trial(s) over 2 value(s), new loss by eval check, 1 constraint(s)`."""
    from lossless.search.space import trial_budget

    search = step.search
    assert search is not None
    objective = search.objective
    goal = f"{objective.goal} " if objective.goal else ""
    metric = f" {objective.metric}" if objective.metric else ""
    return (
        f"search: {search.sampler}, {trial_budget(search)} trial(s) over {len(search.vary)} value(s), "
        f"{goal}{objective.dataset}{metric} by eval {search.eval}, "
        f"{len(search.constraints)} constraint(s)"
    )


def _outputs(step: Step) -> list[str]:
    if isinstance(step, GenerateStep):
        return ["data (data.jsonl" + (", text.jsonl)" if step.text_samples else ")")]
    if isinstance(step, TrainStep):
        return ["model (full weights)" if step.method == "full" else "adapter"]
    if isinstance(step, ApplyStep):
        return ["model" if step.save else "model (lazy view)"]
    if isinstance(step, MergeStep):
        return (
            ["model", "search/ (trials, trade-off plot, best.yaml)"] if step.search else ["model"]
        )
    return ["report"]


def describe_plan(recipe: Recipe) -> list[dict[str, Any]]:
    """One dict per step in run order: name, kind, summary, inputs (role/ref/kind), outputs."""
    from lossless.recipe.graph import topological_steps

    names = recipe.step_names
    plan = []
    for step in topological_steps(recipe):
        inputs = [
            {
                "role": item.role,
                "ref": item.value,
                "kind": "step" if item.ref.name in names else "external",
            }
            for item in recipe.inputs_of(step.name)
            if item.kind == "model" or item.steps_read(names)  # data: a generate step's rows
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
    from lossless.recipe.graph import build_graph, external_refs

    graph = build_graph(recipe)
    lines = ["digraph recipe {", "  rankdir=LR;", "  node [shape=box];"]
    for name, data in graph.nodes(data=True):
        lines.append(f'  "{name}" [label="{name}\\n({data["step"].kind})"];')
    for ref in external_refs(recipe):
        lines.append(f'  "{ref}" [shape=ellipse, style=dashed];')
    for src, dst in graph.edges:
        lines.append(f'  "{src}" -> "{dst}";')
    for item in recipe.inputs:
        ref = item.ref
        if item.kind == "model" and ref.name not in recipe.step_names:
            external = ref.name if not ref.revision else f"{ref.name}@{ref.revision}"
            lines.append(f'  "{external}" -> "{item.owner}";')
    lines.append("}")
    return "\n".join(dict.fromkeys(lines))  # an external model used twice by a step: one edge


def render_text(plan: list[dict[str, Any]]) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title="plan (run order)", show_lines=False)
    for column in ("#", "step", "kind", "what", "inputs", "outputs", "state"):
        table.add_column(column)
    for i, row in enumerate(plan, start=1):
        inputs = "\n".join(f"{x['role']}: {x['ref']}" for x in row["inputs"])
        state = row.get("state", "")
        if row.get("why") and state != "fresh":
            state += f" ({row['why']})"
        table.add_row(
            str(i),
            row["name"],
            row["kind"],
            row["summary"],
            inputs,
            ", ".join(row["outputs"]),
            state,
        )
    buffer = StringIO()
    Console(file=buffer, width=140, no_color=True).print(table)
    return buffer.getvalue().rstrip()


def add_freshness(
    recipe: Recipe, plan: list[dict[str, Any]], work_dir: str | None, verify: bool = False
) -> None:
    """Each step's state (fresh / stale / missing / lazy) and why, from the runner's records."""
    from pathlib import Path

    from lossless.engine.runner import RunOptions, statuses
    from lossless.errors import LosslessError

    try:
        found = {
            s.name: s
            for s in statuses(
                recipe, RunOptions(work_dir=Path(work_dir) if work_dir else None, verify=verify)
            )
        }
    except LosslessError as error:  # e.g. a hub model not cached while offline
        for row in plan:
            row["state"], row["why"] = "unknown", str(error).splitlines()[0]
        return
    for row in plan:
        status = found.get(row["name"])
        row["state"] = status.state if status else "unknown"
        row["why"] = "; ".join(status.reasons) if status else ""
        row["output"] = str(status.output) if status and status.output else None


def downloads(recipe: Recipe) -> list[str]:
    """What running the recipe would fetch from the hub, and how many bytes."""
    from pathlib import Path

    from lossless.errors import LosslessError
    from lossless.hub.downloads import describe_downloads, plan_downloads
    from lossless.hub.repos import parse_hub_ref
    from lossless.recipe.graph import external_refs
    from lossless.recipe.references import local_path

    recipe_dir = Path(recipe.path).resolve().parent
    refs = [
        str(r)
        for r in external_refs(recipe)
        if local_path(r.name, recipe_dir) is None and parse_hub_ref(r.name) is not None
    ]
    if not refs:
        return []
    try:
        return describe_downloads(plan_downloads(refs))
    except LosslessError as error:
        return [f"downloads unknown: {str(error).splitlines()[0]}"]


def merge_params(recipe: Recipe, work_dir: str | None) -> list[dict[str, Any]]:
    """Resolved per-layer merge parameters, for every merge whose inputs exist now."""
    from pathlib import Path

    from lossless.engine.resolver import sources_for
    from lossless.engine.runner import Runner, RunOptions
    from lossless.errors import LosslessError
    from lossless.merge.planner import build_plan, describe_params
    from lossless.recipe.model import MergeStep

    runner = Runner(recipe, RunOptions(work_dir=Path(work_dir) if work_dir else None, quiet=True))
    rows: list[dict[str, Any]] = []
    for step in runner.order:
        status = runner.status(step)
        if status.output is not None and status.state == "fresh":
            runner.resolver.step_dirs[step.name] = status.output
        if not isinstance(step, MergeStep):
            continue
        try:
            plan = build_plan(step, sources_for(step, runner.resolver))
        except LosslessError as error:
            rows.append({"step": step.name, "error": str(error).splitlines()[0]})
            continue
        rows += [{"step": step.name, **row} for row in describe_params(plan)]
    return rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This command's arguments (the CLI assembles its parser from every command's)."""
    p = sub.add_parser(
        "plan", help="show the step DAG: inputs, outputs, what is fresh, what will run"
    )
    p.add_argument("recipe")
    p.add_argument("--format", choices=["text", "dot", "json"], default="text")
    p.add_argument("--params", action="store_true", help="show resolved merge parameters per layer")
    p.add_argument(
        "--work-dir",
        help="where step outputs are kept (default: .lossless/<recipe name>/ beside the recipe)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check each fresh output's files against their recorded sha256 (sizes always)",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from lossless.commands.common import recipe_file
    from lossless.validation.formatting import render_problems
    from lossless.validation.recipe_check import load_recipe

    recipe, warnings = load_recipe(recipe_file(args.recipe, quiet=True))
    if args.format == "dot":
        print(render_dot(recipe))
        return 0
    plan = describe_plan(recipe)
    add_freshness(recipe, plan, args.work_dir, verify=args.verify)
    fetch = downloads(recipe)
    params = merge_params(recipe, args.work_dir) if args.params else []
    if args.format == "json":
        print(json.dumps({"steps": plan, "downloads": fetch, "params": params}, indent=2))
        return 0
    if warnings:
        print(render_problems(warnings, "text") + "\n")
    print(render_text(plan))
    for line in fetch:
        print(line)
    for row in params:
        if "error" in row:
            print(f"{row['step']}: parameters unknown: {row['error']}")
        else:
            layer = "-" if row.get("layer") is None else row["layer"]
            print(
                f"{row['step']}  layer {layer}  {row['tensor']}  {row['model']}.{row['param']} = {row['value']}"
            )
    return 0
