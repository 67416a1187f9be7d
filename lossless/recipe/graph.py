"""The recipe's steps as a networkx DAG: an edge `a → b` means step b reads step a's output
(a model, an adapter, or the rows of a `generate:` step named as data).

Model references that name no step (hub ids, local directories) are not nodes; `external_refs`
lists them. Merge stages, train, apply and eval steps share one namespace, so a merge stage can
merge an applied model and an eval step can measure a merge stage.
"""

from __future__ import annotations

import networkx as nx

from lossless.errors import Problem, RecipeInvalid
from lossless.recipe.model import ModelRef, Recipe, Step


def build_graph(recipe: Recipe) -> nx.DiGraph:
    """Node = step name (attribute `step`); edge dependency → dependent (attribute `role`)."""
    graph = nx.DiGraph()
    names = recipe.step_names
    for step in recipe.steps:
        graph.add_node(step.name, step=step)
    for item in recipe.inputs:
        if item.owner not in names:
            continue
        for name in item.steps_read(names):
            graph.add_edge(name, item.owner, role=item.role)
    return graph


def external_refs(recipe: Recipe) -> list[ModelRef]:
    """Model references that name no step (hub ids, local paths), in order of first use, unique."""
    names = recipe.step_names
    seen: dict[str, ModelRef] = {}
    for item in recipe.inputs:
        if item.kind != "model":
            continue
        ref = item.ref
        if ref.name not in names:
            plain = ModelRef(ref.name, ref.revision)
            seen.setdefault(str(plain), plain)
        if ref.lora and ref.lora not in names:
            seen.setdefault(ref.lora, ModelRef(ref.lora))
    return list(seen.values())


def find_cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Each cycle once, as its node list starting from its alphabetically first node."""
    cycles = []
    for cycle in nx.simple_cycles(graph):
        start = cycle.index(min(cycle))
        cycles.append(cycle[start:] + cycle[:start])
    return sorted(cycles)


def describe_cycle(cycle: list[str]) -> str:
    """["a", "b"] → "a → b → a"."""
    return " → ".join([*cycle, cycle[0]])


def cycle_problems(graph: nx.DiGraph, file: str = "") -> list[Problem]:
    return [
        Problem(
            f"steps depend on each other in a cycle: {describe_cycle(cycle)}",
            file=file,
            hint="a step cannot use its own output, directly or through other steps",
            code="cycle",
        )
        for cycle in find_cycles(graph)
    ]


def topological_steps(recipe: Recipe) -> list[Step]:
    """Steps in an order where every step comes after the steps it reads (recipe order on ties)."""
    graph = build_graph(recipe)
    problems = cycle_problems(graph, recipe.path)
    if problems:
        raise RecipeInvalid(problems)
    position = {step.name: i for i, step in enumerate(recipe.steps)}
    order = nx.lexicographical_topological_sort(graph, key=lambda name: position[name])
    return [graph.nodes[name]["step"] for name in order]
