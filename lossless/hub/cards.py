"""Model cards through `huggingface_hub.ModelCard`: what the hub indexes, and the recipe.

The front matter is what hub search reads, so it says what the model came from:

    base_model: [Qwen/Qwen2-0.5B, org/math-tune]   every hub model the output derives from, found
                                                   by walking steps back to their inputs
    base_model_relation: merge                     merge | adapter | finetune (hub vocabulary)
    tags: [lossless, mergekit, merge, ties]        `mergekit` is what hub search uses for merges
    datasets: [org/chat-data]                      the hub datasets the train steps read
    model-index: ...                               eval results (`lossless push` adds them from
                                                   the work dir: the eval runs after the merge)

Local models and data files are shown by their directory or file name, never by the machine's
path. The body lists the inputs by what they are (not by step names) and ends with the recipe in
a ```yaml block, which `lossless run hub:org/name` finds again (hub/reproduce.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from lossless.recipe.model import (
    ApplyStep,
    EvalStep,
    GenerateStep,
    MergeStep,
    ModelRef,
    Recipe,
    TrainStep,
)

BASE_TAGS = ("lossless",)
MERGE_TAGS = ("mergekit", "merge")


@dataclass(frozen=True)
class Lineage:
    """Where one step's output comes from, in hub terms (see `lineage`)."""

    hub_models: tuple[str, ...] = ()  # hub ids, revision dropped (base_model takes plain ids)
    local_models: tuple[str, ...] = ()  # directory names of local models
    hub_datasets: tuple[str, ...] = ()
    local_datasets: tuple[str, ...] = ()  # file names of local data
    methods: tuple[str, ...] = ()  # merge methods on the way, outermost first
    relation: str | None = None  # merge | adapter | finetune
    adapter_base: str | None = None  # a train step's direct base, as a hub id or a name


@dataclass
class _Walk:
    hub_models: dict[str, None] = field(default_factory=dict)
    local_models: dict[str, None] = field(default_factory=dict)
    hub_datasets: dict[str, None] = field(default_factory=dict)
    local_datasets: dict[str, None] = field(default_factory=dict)
    methods: dict[str, None] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


def display_name(name: str) -> str:
    """A local path as people should read it: `./models/base` → `base`, `/data/x.jsonl` → `x.jsonl`."""
    return PurePath(name.rstrip("/\\")).name or name


def lineage(recipe: Recipe, step_name: str) -> Lineage:
    """Every external model and dataset `step_name`'s output derives from, through other steps.

    An apply step's `to` and a train step's `base` count as models the output derives from; an
    eval or generate step only through the data it makes (a generate step's model is not a base).
    """
    walk = _Walk()
    _walk(recipe, step_name, walk)
    step = recipe.step(step_name)
    relation = {"merge": "merge", "apply": "merge", "train": "finetune"}.get(step.kind)
    adapter_base = None
    if isinstance(step, TrainStep):
        if step.settings.is_peft:
            relation = "adapter"
        if step.base is not None:
            adapter_base = _name_of(recipe, step.base.name)
    if isinstance(step, ApplyStep) and len(walk.hub_models) + len(walk.local_models) == 1:
        relation = "finetune"  # one model with adapters baked in
    return Lineage(
        hub_models=tuple(walk.hub_models),
        local_models=tuple(walk.local_models),
        hub_datasets=tuple(walk.hub_datasets),
        local_datasets=tuple(walk.local_datasets),
        methods=tuple(walk.methods),
        relation=relation,
        adapter_base=adapter_base,
    )


def _walk(recipe: Recipe, name: str, walk: _Walk) -> None:
    if name in walk.seen:
        return
    walk.seen.add(name)
    step = recipe.step(name)
    if isinstance(step, MergeStep):
        walk.methods.setdefault(step.merge_method, None)
    if isinstance(step, TrainStep | GenerateStep | EvalStep):
        for item in recipe.inputs_of(name, "data"):
            if item.role != "deepspeed":  # a launch setting, not data the model learnt from
                _add_data(recipe, item.value, walk)
    if isinstance(step, GenerateStep | EvalStep):
        return  # its model writes data; the output does not derive from it
    for ref in recipe.model_refs(name):
        if isinstance(step, TrainStep) and _is_teacher(recipe, name, ref):
            continue
        _add_model(recipe, ref, walk)


def _is_teacher(recipe: Recipe, step: str, ref: ModelRef) -> bool:
    roles = {i.role for i in recipe.inputs_of(step, "model") if i.value == str(ref)}
    return bool(roles) and all(r.startswith("distill") for r in roles)


def _add_model(recipe: Recipe, ref: ModelRef, walk: _Walk) -> None:
    if ref.lora:  # model+lora: the model and the adapter, each on its own
        _add_model(recipe, ModelRef(ref.name, ref.revision), walk)
        _add_model(recipe, ModelRef.parse(ref.lora), walk)
        return
    if ref.revision is None and ref.name in recipe.step_names:
        _walk(recipe, ref.name, walk)
        return
    kind = _kind(recipe, ref.name)
    target = walk.hub_models if kind == "hub" else walk.local_models
    target.setdefault(ref.name if kind == "hub" else display_name(ref.name), None)


def _add_data(recipe: Recipe, value: str, walk: _Walk) -> None:
    if value in recipe.step_names:
        _walk(recipe, value, walk)
        return
    from lossless.recipe.references import data_kind, hub_dataset_id

    # As the train step reads it (references.data_kind); the card names a hub dataset's repo.
    if data_kind(value, recipe.step_names, Path(recipe.path).parent) == "hub":
        walk.hub_datasets.setdefault(hub_dataset_id(value)[0], None)
    else:
        walk.local_datasets.setdefault(display_name(value), None)


def _kind(recipe: Recipe, name: str) -> str:
    from lossless.recipe.references import UnknownReference, classify_name

    try:
        return classify_name(name, recipe.step_names, Path(recipe.path).parent)
    except UnknownReference:
        return "local"


def _name_of(recipe: Recipe, name: str) -> str:
    if name in recipe.step_names:
        return name
    return name if _kind(recipe, name) == "hub" else display_name(name)


@dataclass(frozen=True)
class Score:
    """One number for `model-index`: `dataset` measured with `metric` by eval step `source`."""

    dataset: str
    metric: str
    value: float
    source: str


def eval_scores(eval_json: Mapping[str, Any], model: str) -> list[Score]:
    """`model`'s headline numbers from an `eval.json` payload (datasets and lm-eval tasks)."""
    per_dataset = eval_json.get("scores", {}).get(model, {})
    out = []
    skills = {**eval_json.get("datasets", {}), **(eval_json.get("tasks") or {})}
    for name, info in skills.items():
        value = per_dataset.get(name, {}).get(info.get("metric"))
        if isinstance(value, int | float):
            out.append(Score(name, str(info["metric"]), float(value), str(eval_json.get("step"))))
    return out


def build_card(
    recipe_text: str,
    *,
    name: str,
    lineage: Lineage,
    lock_text: str | None = None,
    scores: Sequence[Score] = (),
    repo_id: str | None = None,
) -> str:
    """The model card (README.md) of an output named `name` (the repo id when pushing): its
    metadata made by huggingface_hub's `ModelCardData`, the text as `ModelCard(text)` would
    write it back (tests/test_cards.py checks that). `ModelCard` itself is not imported: its
    module loads the hub client, 0.2 s at the end of every merge."""
    from huggingface_hub.repocard_data import EvalResult, ModelCardData

    from lossless.hub.reproduce import card_section

    tags = list(BASE_TAGS)
    if lineage.relation == "merge":
        tags += [*MERGE_TAGS, *[m for m in lineage.methods if m != "apply"]]
    if lineage.relation == "adapter":
        tags += ["lora", "peft"]
    results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=s.dataset,
            dataset_name=s.dataset,
            metric_type=s.metric,
            metric_value=round(s.value, 6),
            metric_name=f"{s.metric} (lossless eval {s.source})",
        )
        for s in scores
    ]
    data = ModelCardData(
        base_model=list(lineage.hub_models) or None,
        base_model_relation=lineage.relation if lineage.hub_models else None,
        datasets=list(lineage.hub_datasets) or None,
        library_name="peft" if lineage.relation == "adapter" else "transformers",
        tags=tags,
        model_name=(repo_id or name) if results else None,
        eval_results=results or None,
    )
    body = [f"# {name}", "", _summary(lineage)]
    body += _listing("Models", lineage.hub_models, lineage.local_models, "")
    body += _listing("Training data", lineage.hub_datasets, lineage.local_datasets, "datasets/")
    if scores:
        body += [
            "",
            "## Evaluation",
            "",
            "| dataset | metric | value | eval step |",
            "|---|---|---|---|",
        ]
        body += [f"| {s.dataset} | {s.metric} | {s.value:.4f} | {s.source} |" for s in scores]
    body += ["", card_section(recipe_text, lock_text, repo_id)]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def render_card(recipe_text: str, **kwargs: Any) -> str:
    """README.md text of `build_card`."""
    return build_card(recipe_text, **kwargs)


def _summary(lineage: Lineage) -> str:
    methods = [m for m in lineage.methods if m != "apply"]
    if lineage.relation == "merge" and methods:
        used = ", ".join(f"`{m}`" for m in methods)
        return f"This model was merged with lossless (mergekit-compatible) using {used}."
    if lineage.relation == "adapter":
        return f"A LoRA adapter for `{lineage.adapter_base}`, trained with lossless."
    return "This model was made with lossless."


def _listing(title: str, hub: Iterable[str], local: Iterable[str], prefix: str) -> list[str]:
    lines = [f"- [{h}](https://huggingface.co/{prefix}{h})" for h in hub]
    lines += [f"- {name} (local)" for name in local]
    return ["", f"{title}:", "", *lines] if lines else []
