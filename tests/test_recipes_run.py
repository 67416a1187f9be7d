"""Every pure-merge recipe in recipes/ runs: its hub models are swapped for tiny local stand-ins
(same shapes among themselves, enough layers for every layer_range), nothing else is changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.recipe.graph import external_refs
from lossless.recipe.model import EvalStep, TrainStep
from lossless.validation.recipe_check import load_recipe
from tests.factories import make_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def pure_merges() -> list[Path]:
    found = []
    for path in sorted(RECIPES.glob("*.yaml")):
        if path.name.startswith("."):
            continue  # scratch recipes of a running benchmark
        recipe, _ = load_recipe(path)
        if not any(isinstance(s, TrainStep | EvalStep) for s in recipe.steps) and recipe.merges:
            found.append(path)
    return found


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stand-ins")


@pytest.mark.parametrize("path", pure_merges(), ids=lambda p: p.name)
def test_pure_merge_recipe_runs(path: Path, stand_ins: Path, tmp_path: Path) -> None:
    from lossless.engine.runner import Runner, RunOptions

    recipe, _ = load_recipe(path)
    text = path.read_text()
    # longest names first, so `org/model-v2` is not half-replaced by `org/model`
    names = sorted({ref.name for ref in external_refs(recipe)}, key=len, reverse=True)
    for i, name in enumerate(names):
        local = stand_ins / name.replace("/", "__")
        if not local.exists():
            make_model(local, seed=i + 1, layers=40)
        text = text.replace(name, str(local))
    copy = tmp_path / path.name
    copy.write_text(text)
    local_recipe, _ = load_recipe(copy)
    out = tmp_path / "out"
    Runner(local_recipe, RunOptions(out=out, quiet=True, write_lock=False)).run()

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers >= 1
