"""The lossless method as one recipe (train on base → apply to instruct → TIES → eval), and the
cache: editing one kind of setting reruns exactly the steps that depend on it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.factories import make_model, write_jsonl

RECIPE = """
train:
  new_skill:
    base: base
    method: lora
    data: data/train.jsonl
    chat_template: chatml
    lora: {r: 4, alpha: 8, target_modules: [q_proj, v_proj]}
    max_steps: 3
    learning_rate: LR
    batch_size: 2
    max_seq_length: 128  # 32 cut every answer away: loss 0, nothing learnt
apply:
  adapted: {adapter: new_skill, to: instruct}
models:
  - model: adapted
    parameters: {weight: WEIGHT, density: 1.0}
  - model: instruct
    parameters: {weight: 1.0, density: 1.0}
merge_method: ties
base_model: base
dtype: float32
output: merged-out
eval:
  check:
    models: [instruct, merged]
    data: {old: {path: data/EVAL, role: old}}
    chat_template: chatml
    max_new_tokens: 2
"""


def write(
    root: Path, lr: str = "1.0e-3", weight: str = "1.0", eval_file: str = "eval.jsonl"
) -> Path:
    text = RECIPE.replace("LR", lr).replace("WEIGHT", weight).replace("EVAL", eval_file)
    path = root / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def run(path: Path) -> dict[str, str]:
    from lossless.engine.runner import Runner, RunOptions
    from lossless.validation.recipe_check import load_recipe

    recipe, _ = load_recipe(path)
    return {s.name: s.state for s in Runner(recipe, RunOptions(quiet=True)).run()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("method")
    make_model(root / "base", seed=0)
    make_model(root / "instruct", seed=1)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"first: {a} {b}"},
                {"role": "assistant", "content": a},
            ]
        }
        for a, b in [("cat", "dog"), ("sun", "mat"), ("the", "cat"), ("dog", "bone")] * 2
    ]
    write_jsonl(root / "data" / "train.jsonl", rows)
    write_jsonl(root / "data" / "eval.jsonl", rows[:3])
    write_jsonl(root / "data" / "eval2.jsonl", rows[1:4])
    return root


def test_method_runs_loads_and_generates(world: Path) -> None:
    states = run(write(world))
    assert states == {"new_skill": "ran", "adapted": "lazy", "merged": "ran", "check": "ran"}
    out = world / "merged-out"
    assert (out / "lossless-manifest.json").is_file()
    # resume checkpoints (optimizer state) are dropped once the train step has finished
    assert (world / ".lossless" / "recipe" / "new_skill" / "adapter_model.safetensors").is_file()
    assert not (world / ".lossless" / "recipe" / "new_skill" / "checkpoints").exists()
    results = json.loads((world / ".lossless" / "recipe" / "check" / "eval.json").read_text())
    assert set(results["scores"]) == {"instruct", "merged"}

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("first: cat dog", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 3


def test_cache_matrix(world: Path) -> None:
    run(write(world))  # make sure everything is fresh
    assert set(run(write(world)).values()) <= {"fresh", "lazy"}
    # a merge weight: merge and eval rerun, training does not
    assert run(write(world, weight="0.5")) == {
        "new_skill": "fresh",
        "adapted": "lazy",
        "merged": "ran",
        "check": "ran",
    }
    # eval data: only the eval reruns
    assert run(write(world, weight="0.5", eval_file="eval2.jsonl")) == {
        "new_skill": "fresh",
        "adapted": "lazy",
        "merged": "fresh",
        "check": "ran",
    }
    # a training setting: everything downstream reruns
    assert run(write(world, lr="2.0e-3", weight="0.5", eval_file="eval2.jsonl")) == {
        "new_skill": "ran",
        "adapted": "lazy",
        "merged": "ran",
        "check": "ran",
    }


def test_force_and_only(world: Path) -> None:
    from lossless.engine.runner import Runner, RunOptions
    from lossless.validation.recipe_check import load_recipe

    path = write(world, lr="3.0e-3")
    recipe, _ = load_recipe(path)
    only = Runner(recipe, RunOptions(quiet=True, only=frozenset({"new_skill"}))).run()
    assert {s.name: s.state for s in only} == {"new_skill": "ran"}
    run(path)
    forced = Runner(recipe, RunOptions(quiet=True, force=frozenset({"merged"}))).run()
    assert {s.name: s.state for s in forced} == {
        "new_skill": "fresh",
        "adapted": "lazy",
        "merged": "ran",
        "check": "fresh",
    }
