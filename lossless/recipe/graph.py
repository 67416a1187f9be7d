"""The recipe's steps as a networkx DAG: an edge `a → b` means step b reads step a's output.

Model references that name no step (hub ids, local directories) are not nodes; `external_refs`
lists them. Merge stages, train, apply and eval steps share one namespace, so a merge stage can
merge an applied model and an eval step can measure a merge stage.
"""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from lossless.errors import Problem, RecipeInvalid
from lossless.recipe.model import ApplyStep, EvalStep, MergeStep, ModelRef, Recipe, Step, TrainStep

_TOKENIZER_KEYWORDS = {"base", "union"}


def step_refs(step: Step) -> Iterator[tuple[str, ModelRef]]:
    """Every (role, reference) a step reads, e.g. ("models[0]", ModelRef("adapted"))."""
    if isinstance(step, TrainStep):
        if step.base is not None:
            yield "base", step.base
    elif isinstance(step, ApplyStep):
        yield "to", step.to
        for i, use in enumerate(step.adapters):
            yield f"adapters[{i}]", use.adapter
    elif isinstance(step, EvalStep):
        for i, ref in enumerate(step.models):
            yield f"models[{i}]", ref
        if step.reference is not None:
            yield "reference", step.reference
    elif isinstance(step, MergeStep):
        if step.base_model is not None:
            yield "base_model", step.base_model
        for i, model in enumerate(step.models):
            yield f"models[{i}]", model.model
        for i, piece in enumerate(step.slices):
            if piece.base_model is not None:
                yield f"slices[{i}].base_model", piece.base_model
            for j, source in enumerate(piece.sources):
                yield f"slices[{i}].sources[{j}]", source.model
        for source_key in ("tokenizer_source",):
            value = getattr(step, source_key)
            if value and value not in _TOKENIZER_KEYWORDS:
                yield source_key, ModelRef.parse(value)
        token_source = (step.tokenizer or {}).get("source")
        if isinstance(token_source, str) and token_source not in _TOKENIZER_KEYWORDS:
            yield "tokenizer.source", ModelRef.parse(token_source)


def _ref_names(ref: ModelRef) -> list[str]:
    return [ref.name] + ([ref.lora] if ref.lora else [])


def build_graph(recipe: Recipe) -> nx.DiGraph:
    """Node = step name (attribute `step`); edge dependency → dependent (attribute `role`)."""
    graph = nx.DiGraph()
    names = recipe.step_names
    for step in recipe.steps:
        graph.add_node(step.name, step=step)
    for step in recipe.steps:
        for role, ref in step_refs(step):
            for name in _ref_names(ref):
                if name in names:
                    graph.add_edge(name, step.name, role=role)
    return graph


def external_refs(recipe: Recipe) -> list[ModelRef]:
    """References that name no step (hub ids, local paths), in order of first use, unique."""
    names = recipe.step_names
    seen: dict[str, ModelRef] = {}
    for step in recipe.steps:
        for _, ref in step_refs(step):
            if ref.name not in names:
                seen.setdefault(
                    str(ModelRef(ref.name, ref.revision)), ModelRef(ref.name, ref.revision)
                )
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
