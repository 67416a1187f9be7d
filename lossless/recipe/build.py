"""Checked YAML documents → the frozen dataclasses of `lossless.recipe.model`.

Runs after the schema and semantic passes found no error, so it trusts the shapes it reads and
holds no validation logic. Steps come out in a readable order: generate, train, apply, merge
stages (in document order), eval; `graph.topological_steps` gives the order to run them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lossless.recipe.inputs import is_merge_document, stage_name
from lossless.recipe.model import (
    AdapterUse,
    ApplyStep,
    EvalStep,
    GenerateStep,
    InputModel,
    LengthFilter,
    MergeSearch,
    MergeStep,
    ModelRef,
    PushTarget,
    Recipe,
    Sampling,
    SearchDimension,
    SearchObjective,
    Slice,
    Step,
    TrainStep,
)
from lossless.recipe.train_block import build_train_settings

# Keys of a document that belong to lossless, not to the mergekit config of its merge stage.
LOSSLESS_KEYS = ("generate", "train", "apply", "eval", "output", "name", "search", "push_to_hub")


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
        # By default the eval's gates on its datasets: trials are not run through lm-eval, so
        # gates on its `tasks:` are checked by the eval step itself, once, on the best merge.
        constraints=dict(
            block["constraints"]
            if "constraints" in block
            else {k: v for k, v in source.gate.items() if k in source.data}
        ),
        trials=block.get("trials"),
        sampler=block.get("sampler", "grid"),
        seed=int(block.get("seed", 0)),
    )


def build_merge(doc: Mapping[str, Any], evals: Mapping[str, EvalStep] | None = None) -> MergeStep:
    config = {k: v for k, v in doc.items() if k not in LOSSLESS_KEYS}
    modules = doc.get("modules") or {}
    inputs = modules.get("default", doc) if list(modules) == ["default"] else doc
    search = doc.get("search")
    return MergeStep(
        name=stage_name(doc),
        merge_method=doc["merge_method"],
        models=tuple(_input_model(m) for m in inputs.get("models") or ()),
        slices=tuple(_slice(s) for s in inputs.get("slices") or ()),
        module_parameters=dict(inputs.get("parameters") or {}) if inputs is not doc else {},
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


def _sampling(block: Mapping[str, Any] | None, length_key: str) -> Sampling:
    block = block or {}
    return Sampling(
        temperature=float(block.get("temperature", 1.0)),
        top_p=float(block.get("top_p", 1.0)),
        max_new_tokens=int(block.get(length_key, 64)),
    )


def build_generate(name: str, block: Mapping[str, Any]) -> GenerateStep:
    length = block.get("length") or {}
    text = block.get("text") or {}
    return GenerateStep(
        name=name,
        model=ModelRef.parse(block["model"]),
        prompts=block.get("prompts"),
        samples=block.get("samples"),
        chat_template=block.get("chat_template"),
        max_new_tokens=int(block.get("max_new_tokens", 128)),
        batch_size=int(block.get("batch_size", 16)),
        seed=block.get("seed"),
        length=LengthFilter(int(length.get("min_chars", 1)), length.get("max_chars")),
        magpie=_sampling(block.get("magpie"), "max_prompt_tokens"),
        text_samples=int(text.get("samples", 0)),
        text=_sampling(text, "max_new_tokens"),
    )


def build_train(name: str, block: Mapping[str, Any]) -> TrainStep:
    return TrainStep(
        name=name,
        base=_ref(block.get("base")),
        settings=build_train_settings(block),
        # Where the adapter is pushed is no training setting: out of the digested block.
        block={k: v for k, v in block.items() if k != "push_to_hub"},
    )


def build_push(value: Any) -> PushTarget:
    """`push_to_hub: org/name` or `{repo, private, revision}`."""
    if isinstance(value, str):
        return PushTarget(value)
    return PushTarget(str(value["repo"]), bool(value.get("private", False)), value.get("revision"))


def _pushes(documents: Sequence[Mapping[str, Any]]) -> dict[str, PushTarget]:
    found = {}
    for doc in documents:
        if "push_to_hub" in doc and is_merge_document(doc):
            found[stage_name(doc)] = build_push(doc["push_to_hub"])
        for kind in ("train", "apply"):
            for name, block in (doc.get(kind) or {}).items():
                if "push_to_hub" in block:
                    found[name] = build_push(block["push_to_hub"])
    return found


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
    """All documents of one file → one Recipe (step blocks may sit in any document)."""
    generate: list[Step] = []
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
        for name, block in (doc.get("generate") or {}).items():
            generate.append(build_generate(name, block))
        for name, block in (doc.get("train") or {}).items():
            train.append(build_train(name, block))
        for name, block in (doc.get("apply") or {}).items():
            apply.append(build_apply(name, block))
        if is_merge_document(doc):
            merges.append(build_merge(doc, evals))  # a search reads an eval step's settings
        output = doc.get("output", output)
    return Recipe(
        path=path,
        steps=tuple(generate + train + apply + merges + list(evals.values())),
        output=output,
        documents=tuple(documents),
        pushes=_pushes(documents),
    )
