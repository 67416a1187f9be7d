"""Checked YAML documents → the frozen dataclasses of `lossless.recipe.model`.

Runs after the schema and semantic passes found no error, so it trusts the shapes it reads and
holds no validation logic. Steps come out in a readable order: train, apply, merge stages (in
document order), eval; `graph.topological_steps` gives the order to run them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lossless.recipe.inputs import is_merge_document, stage_name
from lossless.recipe.model import (
    AdapterUse,
    ApplyStep,
    EvalStep,
    InputModel,
    MergeSearch,
    MergeStep,
    ModelRef,
    Recipe,
    SearchDimension,
    SearchObjective,
    Slice,
    Step,
    TrainStep,
)

# Keys of a document that belong to lossless, not to the mergekit config of its merge stage.
LOSSLESS_KEYS = ("train", "apply", "eval", "output", "name", "search")


def _ref(text: str | None) -> ModelRef | None:
    return ModelRef.parse(text) if isinstance(text, str) else None


def _input_model(entry: Mapping[str, Any]) -> InputModel:
    layer_range = entry.get("layer_range")
    return InputModel(
        model=ModelRef.parse(entry["model"]),
        parameters=dict(entry.get("parameters") or {}),
        layer_range=(int(layer_range[0]), int(layer_range[1])) if layer_range else None,
    )


def _slice(entry: Mapping[str, Any]) -> Slice:
    return Slice(
        sources=tuple(_input_model(s) for s in entry["sources"]),
        parameters=dict(entry.get("parameters") or {}),
        base_model=_ref(entry.get("base_model")),
        residual_weight=entry.get("residual_weight"),
    )


def build_dimension(name: str, spec: Mapping[str, Any]) -> SearchDimension:
    from lossless.search.space import parse_path

    choices = spec.get("choices")
    return SearchDimension(
        name=name,
        keys=parse_path(name),
        choices=tuple(choices) if choices is not None else None,
        low=spec.get("low"),
        high=spec.get("high"),
        step=spec.get("step"),
        log=bool(spec.get("log", False)),
    )


def build_search(block: Mapping[str, Any], evals: Mapping[str, EvalStep]) -> MergeSearch:
    """`search:` → MergeSearch, reading the named eval step's data, reference and settings."""
    source = evals[block["eval"]]
    measure = EvalStep(
        name=source.name,
        models=(),  # each trial's merge is what is measured
        data=source.data,
        reference=source.reference or source.models[0],
        settings={k: v for k, v in source.settings.items() if k not in ("models", "gate")},
    )
    objective = block["objective"]
    return MergeSearch(
        vary=tuple(build_dimension(name, spec) for name, spec in block["vary"].items()),
        eval=source.name,
        measure=measure,
        objective=SearchObjective(
            dataset=objective["dataset"], metric=objective.get("metric"), goal=objective.get("goal")
        ),
        constraints=dict(block.get("constraints", source.gate)),
        trials=block.get("trials"),
        sampler=block.get("sampler", "grid"),
        seed=int(block.get("seed", 0)),
    )


def build_merge(doc: Mapping[str, Any], evals: Mapping[str, EvalStep] | None = None) -> MergeStep:
    config = {k: v for k, v in doc.items() if k not in LOSSLESS_KEYS}
    search = doc.get("search")
    return MergeStep(
        name=stage_name(doc),
        merge_method=doc["merge_method"],
        models=tuple(_input_model(m) for m in doc.get("models") or ()),
        slices=tuple(_slice(s) for s in doc.get("slices") or ()),
        base_model=_ref(doc.get("base_model")),
        parameters=dict(doc.get("parameters") or {}),
        dtype=doc.get("dtype"),
        out_dtype=doc.get("out_dtype"),
        tokenizer_source=doc.get("tokenizer_source"),
        tokenizer=doc.get("tokenizer"),
        chat_template=doc.get("chat_template"),
        modules=doc.get("modules"),
        config=config,
        search=build_search(search, evals or {}) if search else None,
    )


def build_train(name: str, block: Mapping[str, Any]) -> TrainStep:
    return TrainStep(
        name=name,
        base=_ref(block.get("base")),
        method=block.get("method", "lora"),
        init=block.get("init"),
        settings=dict(block),
    )


def build_apply(name: str, block: Mapping[str, Any]) -> ApplyStep:
    if "adapters" in block:
        uses = tuple(
            AdapterUse(ModelRef.parse(a["adapter"]), float(a.get("weight", 1.0)))
            for a in block["adapters"]
        )
    else:
        uses = (AdapterUse(ModelRef.parse(block["adapter"])),)
    return ApplyStep(
        name=name, to=ModelRef.parse(block["to"]), adapters=uses, save=bool(block.get("save"))
    )


def build_eval(name: str, block: Mapping[str, Any]) -> EvalStep:
    return EvalStep(
        name=name,
        models=tuple(ModelRef.parse(m) for m in block["models"]),
        data=dict(block.get("data") or {}),
        reference=_ref(block.get("reference")),
        gate=dict(block.get("gate") or {}),
        settings=dict(block),
    )


def build_recipe(path: str, documents: Sequence[Mapping[str, Any]]) -> Recipe:
    """All documents of one file → one Recipe (train/apply/eval blocks may sit in any document)."""
    train: list[Step] = []
    apply: list[Step] = []
    merges: list[Step] = []
    evals = {
        name: build_eval(name, block)
        for doc in documents
        for name, block in (doc.get("eval") or {}).items()
    }
    output = None
    for doc in documents:
        for name, block in (doc.get("train") or {}).items():
            train.append(build_train(name, block))
        for name, block in (doc.get("apply") or {}).items():
            apply.append(build_apply(name, block))
        if is_merge_document(doc):
            merges.append(build_merge(doc, evals))  # a search reads an eval step's settings
        output = doc.get("output", output)
    return Recipe(
        path=path,
        steps=tuple(train + apply + merges + list(evals.values())),
        output=output,
        documents=tuple(documents),
    )
