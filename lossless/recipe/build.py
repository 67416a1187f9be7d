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
    MergeStep,
    ModelRef,
    Recipe,
    Sampling,
    Slice,
    Step,
    TrainStep,
)

# Keys of a document that belong to lossless, not to the mergekit config of its merge stage.
LOSSLESS_KEYS = ("generate", "train", "apply", "eval", "output", "name")


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


def build_merge(doc: Mapping[str, Any]) -> MergeStep:
    config = {k: v for k, v in doc.items() if k not in LOSSLESS_KEYS}
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
    """All documents of one file → one Recipe (step blocks may sit in any document)."""
    generate: list[Step] = []
    train: list[Step] = []
    apply: list[Step] = []
    merges: list[Step] = []
    evals: list[Step] = []
    output = None
    for doc in documents:
        for name, block in (doc.get("generate") or {}).items():
            generate.append(build_generate(name, block))
        for name, block in (doc.get("train") or {}).items():
            train.append(build_train(name, block))
        for name, block in (doc.get("apply") or {}).items():
            apply.append(build_apply(name, block))
        if is_merge_document(doc):
            merges.append(build_merge(doc))
        for name, block in (doc.get("eval") or {}).items():
            evals.append(build_eval(name, block))
        output = doc.get("output", output)
    return Recipe(
        path=path,
        steps=tuple(generate + train + apply + merges + evals),
        output=output,
        documents=tuple(documents),
    )
