"""`--set key.path=value`: overrides checked like the file, blamed on the override, run as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.errors import RecipeInvalid, UsageError
from lossless.recipe.overrides import parse_overrides
from lossless.validation.recipe_check import load_recipe

RECIPE = """\
models:
  - model: org/a
    parameters: {weight: 0.5}
  - model: org/b
    parameters: {weight: 0.5}
merge_method: linear
dtype: bfloat16
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def test_values_are_read_as_yaml() -> None:
    [weight, lr, listed] = parse_overrides(
        ["models[0].parameters.weight=0.7", "train.x.learning_rate=1e-4", "eval.e.models=[a, b]"]
    )
    assert weight.keys == ("models", 0, "parameters", "weight") and weight.value == 0.7
    assert lr.value == 1e-4 and isinstance(lr.value, float)
    assert listed.value == ["a", "b"]
    for bad in ("no-equals", "models[x]=1", "=1"):
        with pytest.raises(UsageError):
            parse_overrides([bad])


def test_override_changes_the_data_and_the_recipe_text(recipe: Path) -> None:
    built, _ = load_recipe(recipe, overrides=parse_overrides(["models[1].parameters.weight=2"]))
    merge = built.merges[0]
    assert [m.parameters["weight"] for m in merge.models] == [0.5, 2]
    assert built.text is not None and built.text.startswith(
        "# recipe.yaml with --set models[1].parameters.weight=2\n"
    )
    assert "weight: 2" in built.text and str(recipe.parent) not in built.text
    plain, _ = load_recipe(recipe)
    assert plain.text is None


def test_problems_in_an_override_point_at_it(recipe: Path) -> None:
    overrides = parse_overrides(["models[0].parameters.weight=heavy", "dtype=float64"])
    with pytest.raises(RecipeInvalid) as caught:
        load_recipe(recipe, overrides=overrides)
    where = {p.file for p in caught.value.problems}
    assert "--set models[0].parameters.weight" in where and "--set dtype" in where
    assert all(p.line == 0 for p in caught.value.problems if p.file.startswith("--set"))


def test_an_override_cannot_add_list_items(recipe: Path) -> None:
    with pytest.raises(
        UsageError, match=r"--set models\[5\]\.model: index \[5\] is not in the recipe"
    ):
        load_recipe(recipe, overrides=parse_overrides(["models[5].model=org/c"]))
    with pytest.raises(UsageError, match="set inside a str"):
        load_recipe(recipe, overrides=parse_overrides(["dtype.x=1"]))
