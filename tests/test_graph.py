"""The step DAG and reference classification."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.errors import RecipeInvalid
from lossless.recipe.graph import build_graph, cycle_problems, external_refs, topological_steps
from lossless.recipe.model import ModelRef
from lossless.recipe.references import UnknownReference, classify_ref, local_path
from lossless.validation.recipe_check import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_continual_finetune_graph() -> None:
    recipe, _ = load_recipe(ROOT / "recipes" / "base-lora-ties.yaml")
    graph = build_graph(recipe)
    assert set(graph.nodes) == {"new_skill", "adapted", "merged", "forgetting"}
    assert set(graph.edges) == {
        ("new_skill", "adapted"),
        ("adapted", "merged"),
        ("merged", "forgetting"),
    }
    assert graph.nodes["merged"]["step"].kind == "merge"
    assert [s.name for s in topological_steps(recipe)] == [
        "new_skill",
        "adapted",
        "merged",
        "forgetting",
    ]
    assert [str(r) for r in external_refs(recipe)] == [
        "Qwen/Qwen2-0.5B",
        "Qwen/Qwen2-0.5B-Instruct",
    ]


def test_topological_order_puts_dependency_first(tmp_path: Path) -> None:
    # The eval is written first and the stage it reads second: run order must flip them.
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: second\nmodels:\n  - model: first\n    parameters: {weight: 1}\n"
        "merge_method: linear\n---\n"
        "name: first\nmodels:\n  - model: org/a\n    parameters: {weight: 1}\n"
        "merge_method: linear\n"
    )
    recipe, _ = load_recipe(path)
    assert [s.name for s in recipe.steps] == ["second", "first"]
    assert [s.name for s in topological_steps(recipe)] == ["first", "second"]


def test_lora_suffix_is_a_dependency(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    (tmp_path / "d.jsonl").write_text("")  # a data file that does not exist is an error
    path.write_text(
        "train:\n  ad:\n    base: org/base\n    data: d.jsonl\n"
        "models:\n  - model: org/base+ad\n    parameters: {weight: 1}\nmerge_method: linear\n"
    )
    recipe, _ = load_recipe(path)
    assert set(build_graph(recipe).edges) == {("ad", "merged")}
    assert external_refs(recipe) == [ModelRef("org/base")]


def test_cycle_is_reported_not_sorted() -> None:
    path = ROOT / "tests" / "invalid" / "stage-cycle.yaml"
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(path)
    assert [p.message for p in info.value.problems] == [
        "steps depend on each other in a cycle: first → second → first"
    ]


def test_topological_steps_refuses_a_cyclic_recipe() -> None:
    from lossless.recipe.build import build_recipe

    recipe = build_recipe(
        "r.yaml",
        [
            {"name": "a", "merge_method": "linear", "models": [{"model": "b"}]},
            {"name": "b", "merge_method": "linear", "models": [{"model": "a"}]},
        ],
    )
    assert [p.message for p in cycle_problems(build_graph(recipe))] == [
        "steps depend on each other in a cycle: a → b → a"
    ]
    with pytest.raises(RecipeInvalid):
        topological_steps(recipe)


def test_classify_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "recipes" / "local-model").mkdir(parents=True)
    (tmp_path / "cwd-model").mkdir()
    monkeypatch.chdir(tmp_path)
    rdir = tmp_path / "recipes"
    steps = {"tuned", "merged"}
    assert classify_ref(ModelRef.parse("tuned"), steps, rdir) == "step"
    assert classify_ref(ModelRef.parse("local-model"), steps, rdir) == "local"
    assert classify_ref(ModelRef.parse("cwd-model"), steps, rdir) == "local"  # CWD fallback
    assert classify_ref(ModelRef.parse("./not-yet"), steps, rdir) == "local"
    assert classify_ref(ModelRef.parse("~/x"), steps, rdir) == "local"
    assert classify_ref(ModelRef.parse("Qwen/Qwen2-0.5B@main"), steps, rdir) == "hub"
    assert local_path("local-model", rdir) == rdir / "local-model"
    assert local_path("missing", rdir) is None
    with pytest.raises(UnknownReference) as info:
        classify_ref(ModelRef.parse("tunde"), steps, rdir)
    assert info.value.hint == "did you mean `tuned`?"
