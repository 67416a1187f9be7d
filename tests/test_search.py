"""Merge search without models: vary paths, the grid, the samplers on a synthetic objective whose
constrained best is known, constraint margins, and the `search:` block's validation."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from lossless.recipe.model import SearchDimension, SearchObjective
from lossless.search.judge import judge
from lossless.search.loop import Trial, best_trial, run_trials
from lossless.search.samplers import make_sampler
from lossless.search.space import grid, grid_size, lattice, parse_path, snap, substitute
from lossless.validation.recipe_check import check_text

WEIGHT = SearchDimension(
    "models[0].parameters.weight", parse_path("models[0].parameters.weight"), low=0.2, high=1.5,
    step=0.1,
)  # fmt: skip
DENSITY = SearchDimension(
    "models[0].parameters.density", parse_path("models[0].parameters.density"),
    choices=(0.3, 0.6, 1.0),
)  # fmt: skip
DIMS = (WEIGHT, DENSITY)
REFERENCE = {"A": {"exact_match": 0.9}, "C": {"exact_match": 0.1}}
CONSTRAINTS = {"A": {"max_regression": 0.02}}


def synthetic(number: int, point: dict) -> Trial:
    """New skill C grows with weight × density; old skill A drops 5 % per unit of weight, so
    the 2 % constraint holds up to weight 0.4: the known best point is (0.4, 1.0)."""
    w, d = point[WEIGHT.name], point[DENSITY.name]
    scores = {"A": {"exact_match": 0.9 * (1 - 0.05 * w)}, "C": {"exact_match": w * d}}
    judgement = judge(
        scores,
        objective=SearchObjective("C", "exact_match", "maximize"),
        constraints=CONSTRAINTS,
        reference="ref",
        reference_scores=REFERENCE,
        formats={"A": "chat", "C": "chat"},
    )
    return Trial(number, point, judgement)


def test_paths_and_substitution() -> None:
    assert parse_path("models[0].parameters.weight") == ("models", 0, "parameters", "weight")
    assert parse_path("merge_method") == ("merge_method",)
    assert parse_path("slices[1].sources[0].parameters.t") == (
        "slices", 1, "sources", 0, "parameters", "t",
    )  # fmt: skip
    for bad in ("", "[0].x", "models..x", "models[a]", ".x"):
        with pytest.raises(ValueError):
            parse_path(bad)
    config = {"models": [{"model": "a", "parameters": {"weight": 1.0}}], "merge_method": "ties"}
    out = substitute(config, {("models", 0, "parameters", "weight"): 0.3, ("merge_method",): "x"})
    assert out == {"models": [{"model": "a", "parameters": {"weight": 0.3}}], "merge_method": "x"}
    assert config["models"][0]["parameters"]["weight"] == 1.0  # the original is untouched


def test_grid_lattice_and_snap() -> None:
    assert lattice(WEIGHT) == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    assert grid_size(DIMS) == 42
    points = list(grid(DIMS))
    assert points[0] == {WEIGHT.name: 0.2, DENSITY.name: 0.3} and len(points) == 42
    ints = SearchDimension("x", ("x",), low=1, high=7, step=3)
    assert lattice(ints) == [1, 4, 7] and all(isinstance(v, int) for v in lattice(ints))
    assert snap(WEIGHT, 0.44) == 0.4 and snap(WEIGHT, 1.49) == 1.5


def test_grid_finds_the_known_best_point() -> None:
    trials = run_trials(make_sampler("grid", DIMS, 0), 100, synthetic)
    assert len(trials) == 42  # the grid ran out before the budget
    best = best_trial(trials)
    assert best is not None and best.judgement.feasible
    assert best.point == {WEIGHT.name: 0.4, DENSITY.name: 1.0}
    assert best.judgement.objective == pytest.approx(0.4)
    assert best.judgement.margins["A"] == pytest.approx(0.0, abs=1e-9)  # right on the bound


def test_random_sampler_is_seeded_and_picks_the_best_it_saw() -> None:
    first = run_trials(make_sampler("random", DIMS, 7), 25, synthetic)
    again = run_trials(make_sampler("random", DIMS, 7), 25, synthetic)
    other = run_trials(make_sampler("random", DIMS, 8), 25, synthetic)
    assert [t.point for t in first] == [t.point for t in again]
    assert [t.point for t in first] != [t.point for t in other]
    assert all(v in lattice(WEIGHT) for t in first for v in [t.point[WEIGHT.name]])
    best = best_trial(first)
    feasible = [t for t in first if t.judgement.feasible]
    assert best is not None and best.judgement.objective == max(
        t.judgement.objective for t in feasible
    )


def test_optuna_finds_the_known_best_point() -> None:
    pytest.importorskip("optuna")
    trials = run_trials(make_sampler("optuna", DIMS, 0), 40, synthetic)
    again = run_trials(make_sampler("optuna", DIMS, 0), 40, synthetic)
    assert [t.point for t in trials] == [t.point for t in again]  # seeded
    best = best_trial(trials)
    assert best is not None and best.judgement.feasible
    assert best.judgement.objective == pytest.approx(0.4, abs=0.1)


def test_margins_and_breaches() -> None:
    ref = {"old": {"loss": 2.0, "exact_match": 0.8}}
    scores = {"old": {"loss": 2.1, "exact_match": 0.7}, "new": {"loss": 1.0}}
    common = dict(
        objective=SearchObjective("new"),
        reference="ref",
        reference_scores=ref,
        formats={"old": "chat", "new": "text"},
    )
    ok = judge(scores, constraints={"old": {"metric": "loss", "max_regression": 0.1}}, **common)
    assert ok.feasible and ok.margins["old"] == pytest.approx(0.05)  # 10 % allowed, 5 % used
    assert ok.objective == 1.0 and ok.score == -1.0  # loss: minimised, so the score is negated
    bad = judge(scores, constraints={"old": {"max_regression": 0.1}}, **common)  # exact_match
    assert not bad.feasible and bad.margins["old"] == pytest.approx(0.1 - 0.125)
    assert "old: exact_match 0.7000 regressed 12.50 %" in bad.breaches[0]
    floor = judge(scores, constraints={"old": {"metric": "loss", "min_score": 2.0}}, **common)
    assert not floor.feasible and floor.margins["old"] == pytest.approx(-0.1)
    free = judge(scores, constraints={}, **common)
    assert free.feasible and math.isinf(free.worst_margin)


RECIPE = """
models:
  - model: tuned
    parameters: {weight: 1.0, density: 1.0}
  - model: instruct
    parameters: {weight: 1.0, density: 1.0}
merge_method: ties
base_model: base
search:
  vary:
    VARY
  eval: EVAL
  objective: {dataset: OBJ}
  constraints: {old: {max_regression: 0.02}}
  TRIALS
eval:
  check:
    models: [MODELS]
    data: {old: data/old.jsonl, new: data/new.jsonl}
"""


def problems(tmp_path: Path, **subs: str) -> list[tuple[int, str, str]]:
    for name in ("base", "tuned", "instruct", "data/old.jsonl", "data/new.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).mkdir(exist_ok=True) if "." not in name else (tmp_path / name).touch()
    defaults = {
        "VARY": "models[0].parameters.weight: {low: 0.2, high: 1.0, step: 0.4}",
        "EVAL": "check",
        "OBJ": "new",
        "TRIALS": "seed: 0",
        "MODELS": "instruct, merged",
    }
    text = RECIPE
    for key, value in {**defaults, **subs}.items():
        text = text.replace(key, value)
    _, found = check_text(textwrap.dedent(text), "r.yaml", recipe_dir=tmp_path)
    return [(p.line, p.severity, p.message) for p in found]


def test_a_valid_search_and_no_cycle(tmp_path: Path) -> None:
    # The eval step measures the searched stage, and the search reads the eval's reference and
    # data: the stage depends on the eval's inputs, not on the eval step, so there is no cycle.
    assert problems(tmp_path) == []


@pytest.mark.parametrize(
    ("subs", "line", "message"),
    [
        ({"VARY": "models[2].parameters.weight: {choices: [1]}"}, 11, "is not set in this"),
        ({"VARY": "models[0]parameters: {choices: [1]}"}, 11, "is not a config path"),
        ({"VARY": "models[0].parameters.weight: {low: 1, high: 1, step: 1}"}, 11, "is empty"),
        ({"VARY": "models[0].parameters.weight: {low: 0.1, high: 1}"}, 11, "needs `step`"),
        # a value valid in the schema but not for the method: reported at the vary key
        ({"VARY": "models[0].parameters.density: {choices: [0.5, 1.5]}"}, 11, "= 1.5: `density`"),
        ({"VARY": "merge_method: {choices: [ties, tiess]}"}, 11, "`tiess` is not a merge"),
        ({"EVAL": "chek"}, 12, "`chek` is not an eval step"),
        ({"OBJ": "neww"}, 13, "`neww` is not a dataset of eval `check`"),
        ({"MODELS": "merged, instruct"}, 12, "which is this stage `merged` itself"),
        ({"TRIALS": "trials: 2"}, 15, "the grid has 3 points but `trials` is 2"),
        ({"TRIALS": "sampler: random"}, 9, "sampler `random` needs a trial budget"),
    ],
)
def test_search_problems_point_at_the_line(
    tmp_path: Path, subs: dict[str, str], line: int, message: str
) -> None:
    found = problems(tmp_path, **subs)
    assert any(ln == line and message in text for ln, _, text in found), found


def test_grid_bigger_budget_warns(tmp_path: Path) -> None:
    found = problems(tmp_path, TRIALS="trials: 5")
    assert found == [(15, "warning", "the grid has only 3 points: 3 trials will run, not 5")]


def test_plan_says_what_the_search_does(tmp_path: Path) -> None:
    from lossless.commands.plan import describe_plan
    from lossless.validation.recipe_check import load_recipe

    problems(tmp_path)  # writes the inputs
    text = RECIPE
    for key, value in {
        "VARY": "models[0].parameters.weight: {low: 0.2, high: 1.0, step: 0.4}",
        "EVAL": "check",
        "OBJ": "new",
        "TRIALS": "seed: 0",
        "MODELS": "instruct, merged",
    }.items():
        text = text.replace(key, value)
    (tmp_path / "r.yaml").write_text(textwrap.dedent(text))
    recipe, _ = load_recipe(tmp_path / "r.yaml")
    merged = next(s for s in describe_plan(recipe) if s["name"] == "merged")
    assert (
        "search: grid, 3 trial(s) over 1 value(s), new by eval check, 1 constraint(s)"
        in (merged["summary"])
    )
    assert {"role": "search.reference", "ref": "instruct", "kind": "external"} in merged["inputs"]
