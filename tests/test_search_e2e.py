"""A merge search end to end on tiny models: the best merge as the stage output (loadable, and
measured as trials.json says), a rerun fresh with no trial re-measured, best.yaml valid, and an
infeasible search failing with exit 1 after writing its table."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.factories import make_model, write_jsonl

RECIPE = """
# Vary the tuned model's weight: keep the best merge on `new` within the `old` constraint.
models:
  - model: tuned
    parameters: {weight: 1.0}
  - model: instruct
    parameters: {weight: 1.0}
merge_method: task_arithmetic
base_model: base
dtype: float32
output: merged-out
search:
  vary:
    models[0].parameters.weight: {low: 0.0, high: 1.0, step: 0.5}
    models[1].parameters.weight: {choices: [0.5, 1.0]}
  eval: check
  objective: {dataset: new, metric: loss}
  constraints: CONSTRAINTS
eval:
  check:
    models: [instruct, merged]
    data: {old: data/old.jsonl, new: {path: data/new.jsonl, role: new}}
    max_new_tokens: 2
"""
LOOSE = "{old: {metric: loss, max_regression: 5.0}}"
IMPOSSIBLE = "{old: {metric: loss, min_score: 0.01}}"  # a loss ceiling no tiny model meets


def chat(pairs: list[tuple[str, str]]) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"first: {a} {b}"},
                {"role": "assistant", "content": a},
            ]
        }
        for a, b in pairs
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search")
    make_model(root / "base", seed=0)
    make_model(root / "instruct", seed=1)
    make_model(root / "tuned", seed=2)
    write_jsonl(root / "data" / "old.jsonl", chat([("cat", "dog"), ("sun", "mat")]))
    write_jsonl(root / "data" / "new.jsonl", chat([("the", "cat"), ("dog", "bone")]))
    return root


def write(root: Path, constraints: str = LOOSE, name: str = "recipe.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(RECIPE.replace("CONSTRAINTS", constraints)))
    return path


def run(path: Path, **options) -> dict[str, str]:
    from lossless.engine.runner import Runner, RunOptions
    from lossless.validation.recipe_check import load_recipe

    recipe, _ = load_recipe(path)
    return {s.name: s.state for s in Runner(recipe, RunOptions(quiet=True, **options)).run()}


def test_search_keeps_the_best_merge_and_a_rerun_is_fresh(world: Path, monkeypatch) -> None:
    import lossless.steps.eval as eval_step

    path = write(world)
    assert run(path) == {"merged": "ran", "check": "ran"}
    out = world / "merged-out"
    table = json.loads((out / "search" / "trials.json").read_text())
    trials = table["trials"]
    assert len(trials) == 6 and all(t["feasible"] for t in trials)
    best = min(trials, key=lambda t: t["objective"])  # loss: minimised
    assert table["best"] == best["trial"] and table["objective"]["goal"] == "minimize"
    assert (out / "search" / "trials.csv").read_text().count("\n") == 7  # header + 6 rows
    assert (out / "search" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The output is the best trial's merge: a normal model dir, and measured as the table says.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    from lossless.validation.recipe_check import load_recipe

    recipe, _ = load_recipe(path)
    measure = recipe.merges[0].search.measure  # type: ignore[union-attr]
    inputs = eval_step.prepare_inputs(measure, world)
    direct = eval_step.score_model(measure, inputs, out, "merged-out", quiet=True)
    assert direct["new"]["loss"] == pytest.approx(best["objective"], rel=1e-6)
    assert direct["old"]["loss"] == pytest.approx(best["constraints"]["old"]["value"], rel=1e-6)

    # best.yaml: a plain recipe with the best values, no `search:`, that validation accepts.
    from lossless.validation.recipe_check import check_text

    text = (out / "search" / "best.yaml").read_text()
    docs, problems = check_text(text, "best.yaml", recipe_dir=world)
    assert [p for p in problems if p.severity == "error"] == []
    assert "search" not in docs[0]
    weights = [m["parameters"]["weight"] for m in docs[0]["models"]]
    assert weights == [best["params"][f"models[{i}].parameters.weight"] for i in (0, 1)]

    # A rerun is fresh; a forced one re-measures nothing (trials and reference from the cache).
    calls: list[str] = []
    real = eval_step.score_model
    monkeypatch.setattr(
        eval_step, "score_model", lambda *a, **k: calls.append(a[3]) or real(*a, **k)
    )
    assert run(path) == {"merged": "fresh", "check": "fresh"}
    assert run(path, force=frozenset({"merged"}))["merged"] == "ran"
    assert calls == []
    again = json.loads((out / "search" / "trials.json").read_text())
    assert all(t["cached"] for t in again["trials"]) and again["best"] == table["best"]


def test_an_infeasible_search_fails_naming_the_closest_trial(world: Path, capsys) -> None:
    from lossless import cli

    path = write(world, IMPOSSIBLE, name="strict.yaml")
    # A second recipe in the folder needs an output of its own (merged-out is recipe.yaml's).
    path.write_text(path.read_text().replace("output: merged-out", "output: strict-out"))
    assert cli.main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "merge search 'merged': none of 6 trial(s) met every constraint" in err
    assert "the closest, trial" in err and "old: loss" in err and "min_score 0.01" in err
    table = world / ".lossless" / "strict" / "merged.search" / "trials.csv"
    assert str(table) in err.replace("\n", "") or "trials.csv" in err
    assert table.read_text().count("\n") == 7
