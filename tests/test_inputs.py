"""recipe/inputs.py: the one walk over a recipe's inputs, and the consumers that agree with it."""

from __future__ import annotations

from pathlib import Path

import yaml

from lossless.engine.lockfile import recipe_inputs
from lossless.recipe.build import build_recipe
from lossless.recipe.graph import build_graph, external_refs
from lossless.recipe.inputs import walk_inputs
from lossless.recipe.model import ModelRef
from lossless.validation.recipe_check import check_text

RECIPE = """\
train:
  skill:
    base: org/base
    data: [data/a.jsonl, {path: data/b.jsonl}]
    replay: {data: data/old.jsonl, fraction: 0.1}
    ewc: {data: [data/old.jsonl]}
  scratch:
    init: {config: tiny.json, tokenizer: {train_on: [corpus.txt]}}
    method: full
    data: corpus.txt
apply:
  adapted: {adapter: skill, to: org/instruct@v1}
  pair:
    to: org/instruct
    adapters: [{adapter: skill}, {adapter: org/lora}]
models:
  - model: adapted
  - model: org/instruct+org/lora
base_model: org/base
merge_method: ties
tokenizer: {source: org/instruct}
eval:
  check:
    models: [org/instruct, merged]
    reference: org/instruct
    data: {old: data/old.jsonl, new: {path: data/new.jsonl, role: new}}
"""


def test_walk_lists_every_input_with_its_place() -> None:
    rows = [(i.owner, i.role, i.value, i.kind) for i in walk_inputs([yaml.safe_load(RECIPE)])]
    assert rows == [
        ("skill", "base", "org/base", "model"),
        ("skill", "data[0]", "data/a.jsonl", "data"),
        ("skill", "data[1].path", "data/b.jsonl", "data"),
        ("skill", "replay.data", "data/old.jsonl", "data"),
        ("skill", "ewc.data[0]", "data/old.jsonl", "data"),
        ("scratch", "data", "corpus.txt", "data"),
        ("scratch", "init.config", "tiny.json", "data"),
        ("scratch", "init.tokenizer.train_on[0]", "corpus.txt", "data"),
        ("adapted", "to", "org/instruct@v1", "model"),
        ("adapted", "adapter", "skill", "model"),
        ("pair", "to", "org/instruct", "model"),
        ("pair", "adapters[0].adapter", "skill", "model"),
        ("pair", "adapters[1].adapter", "org/lora", "model"),
        ("merged", "base_model", "org/base", "model"),
        ("merged", "models[0]", "adapted", "model"),
        ("merged", "models[1]", "org/instruct+org/lora", "model"),
        ("merged", "tokenizer.source", "org/instruct", "model"),
        ("check", "models[0]", "org/instruct", "model"),
        ("check", "models[1]", "merged", "model"),
        ("check", "reference", "org/instruct", "model"),
        ("check", "data.old", "data/old.jsonl", "data"),
        ("check", "data.new.path", "data/new.jsonl", "data"),
    ]


def test_graph_lock_and_refs_read_the_same_walk() -> None:
    recipe = build_recipe("r.yaml", [yaml.safe_load(RECIPE)])
    assert set(build_graph(recipe).edges) == {
        ("skill", "adapted"),
        ("skill", "pair"),
        ("adapted", "merged"),
        ("merged", "check"),
    }
    assert external_refs(recipe) == [
        ModelRef("org/base"),
        ModelRef("org/instruct", "v1"),
        ModelRef("org/instruct"),
        ModelRef("org/lora"),
    ]
    pinned = {i.ref for i in recipe_inputs(recipe)}
    assert pinned == {
        "org/base",
        "org/instruct@v1",
        "org/instruct",
        "org/lora",
        "data/a.jsonl",
        "data/b.jsonl",
        "data/old.jsonl",
        "corpus.txt",
        "tiny.json",
        "data/new.jsonl",
    }
    assert recipe.model_refs("merged") == [
        ModelRef("org/base"),
        ModelRef("adapted"),
        ModelRef("org/instruct", lora="org/lora"),
        ModelRef("org/lora"),
        ModelRef("org/instruct"),
    ]


def test_validation_reports_a_bad_reference_where_the_walk_found_it(tmp_path: Path) -> None:
    text = RECIPE.replace("to: org/instruct@v1", "to: instrcut")
    _, problems = check_text(text, "r.yaml", recipe_dir=tmp_path)
    bad = [p for p in problems if p.code == "unknown-ref"]
    assert [(p.line, p.message) for p in bad] == [
        (12, "`instrcut` is not a step name, an existing path, or a hub id (org/name)")
    ]
