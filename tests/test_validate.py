"""Validation: the invalid-recipe corpus against golden renderings, the bundled recipes, the
schema/table agreement, strict mode and --resolve against real config.json files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lossless.errors import RecipeInvalid
from lossless.methods.table import METHODS
from lossless.recipe.model import ApplyStep, MergeStep, TrainStep
from lossless.recipe.schema import load_schema
from lossless.validation.formatting import render_problems
from lossless.validation.recipe_check import check_text, load_recipe

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))
# Corpus files whose only problems are warnings (valid unless --strict).
WARNING_ONLY = {"tokenizer-source-in-parameters.yaml", "residual-weight.yaml"}


def rendered(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    _, problems = check_text(path.read_text(encoding="utf-8"), rel, recipe_dir=path.parent)
    return render_problems(problems, "text") + "\n"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_invalid_recipe_matches_golden(case: Path) -> None:
    """Regenerate with LOSSLESS_UPDATE_GOLDEN=1 after an intended wording change."""
    text = rendered(case)
    golden = case.with_suffix(".txt")
    if os.environ.get("LOSSLESS_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file for {case.name}; run with LOSSLESS_UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_invalid_recipe_is_rejected(case: Path) -> None:
    if case.name in WARNING_ONLY:
        _, warnings = load_recipe(case)
        assert warnings and all(p.severity == "warning" for p in warnings)
        with pytest.raises(RecipeInvalid):
            load_recipe(case, strict=True)
    else:
        with pytest.raises(RecipeInvalid) as info:
            load_recipe(case)
        assert any(p.severity == "error" and p.line > 0 for p in info.value.problems) or (
            case.name == "empty.yaml"
        )


# Hidden files are scratch recipes (benchmarks/forgetting.py writes its variants there while it runs).
BUNDLED = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.name.startswith("."))


@pytest.mark.parametrize("recipe", BUNDLED, ids=lambda p: p.stem)
def test_bundled_recipes_validate_strictly(recipe: Path) -> None:
    built, warnings = load_recipe(recipe, strict=True)
    assert warnings == []
    assert built.steps
    first_line = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# ")  # every example says what it does
    assert "lossless run recipes/" in recipe.read_text(encoding="utf-8")


def test_schema_method_enum_equals_method_table() -> None:
    assert set(load_schema()["properties"]["merge_method"]["enum"]) == set(METHODS)


def test_continual_finetune_builds_typed_steps() -> None:
    recipe, _ = load_recipe(ROOT / "recipes" / "continual-finetune.yaml")
    assert [s.name for s in recipe.steps] == [
        "rehearsal",
        "new_skill",
        "adapted",
        "merged",
        "forgetting",
    ]
    train = recipe.step("new_skill")
    assert isinstance(train, TrainStep) and train.settings.learning_rate == pytest.approx(2e-4)
    apply = recipe.step("adapted")
    assert isinstance(apply, ApplyStep) and apply.adapters[0].adapter.name == "new_skill"
    merge = recipe.step("merged")
    assert isinstance(merge, MergeStep) and merge.merge_method == "ties"
    assert merge.base_model is not None and merge.base_model.name == "Qwen/Qwen2-0.5B-Instruct"
    assert "train" not in merge.config and merge.config["dtype"] == "bfloat16"


def test_all_problems_reported_at_once() -> None:
    text = (
        "models:\n"
        "  - model: org/a\n"
        "    parameters: {weight: 1, density: 1.5}\n"
        "merge_method: ties\n"
        "dtpye: bfloat16\n"
    )
    _, problems = check_text(text, "r.yaml")
    codes = sorted(p.code for p in problems)
    assert codes == ["missing-base", "param-range", "unknown-key"]


def test_base_listed_in_models_is_not_counted() -> None:
    text = (
        "models:\n  - model: org/base\n  - model: org/a\n"
        "merge_method: slerp\nbase_model: org/base\nparameters: {t: 0.3}\n"
    )
    assert check_text(text, "r.yaml")[1] == []


def test_local_model_resolved_beside_recipe(tmp_path: Path) -> None:
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "models:\n  - model: models/mine\n    parameters: {weight: 1}\nmerge_method: linear\n"
    )
    built, _ = load_recipe(recipe)
    assert built.merges[0].models[0].model.name == "models/mine"


def _model_dir(root: Path, name: str, **config: object) -> None:
    (root / name).mkdir()
    (root / name / "config.json").write_text(json.dumps(config))


def test_local_inputs_checked_against_layer_range_and_architecture(tmp_path: Path) -> None:
    _model_dir(
        tmp_path, "a", architectures=["LlamaForCausalLM"], num_hidden_layers=4, hidden_size=64
    )
    _model_dir(
        tmp_path, "b", architectures=["Qwen2ForCausalLM"], num_hidden_layers=4, hidden_size=32
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "slices:\n  - sources:\n      - model: ./a\n        layer_range: [0, 6]\n"
        "      - model: ./b\n        layer_range: [0, 6]\n"
        "merge_method: slerp\nbase_model: ./a\nparameters: {t: 0.5}\n"
    )
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(recipe)  # local inputs: no --resolve needed
    messages = [p.message for p in info.value.problems]
    assert messages.count("layer_range ends at 6 but `./a` has 4 layers") == 1
    assert messages.count("layer_range ends at 6 but `./b` has 4 layers") == 1
    assert (
        "`./a` is LlamaForCausalLM but `./b` is Qwen2ForCausalLM: models of different "
        "architectures cannot be merged (hidden_size 64 vs 32)"
    ) in messages
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(recipe, allow_crimes=True)
    assert [p.code for p in info.value.problems] == ["layer-range", "layer-range"]
