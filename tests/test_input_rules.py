"""A method's input rules (base model, model counts) are declared once, on its MethodSpec, and
`lossless validate` and the merge planner both enforce them from there, in the same words."""

from __future__ import annotations

import pytest

from lossless.errors import LosslessError
from lossless.merge.planner import build_plan
from lossless.methods.table import METHODS, MethodSpec
from lossless.validation.recipe_check import check_text
from tests.test_plan import inp, llama, sources, step

RULES = {"missing-base", "model-count", "base-not-listed"}
PARAMS = {"weight": 1, "t": 0.5}  # every method's required parameters, at the top level


def shapes(spec: MethodSpec) -> list[tuple[int, bool]]:
    """(models besides the base, base given): both sides of every declared bound."""
    top = (spec.max_models if spec.max_models is not None else spec.min_models) + 1
    return [(n, b) for n in range(top + 1) for b in (False, True) if n > 0 or b]


def declared(spec: MethodSpec, n: int, has_base: bool) -> list[str]:
    """The problem codes the table's fields say a shape has, worked out without the spec's code."""
    count = n + int(has_base and spec.base == "unused")  # an unused base is one more input
    codes = []
    if spec.base == "required" and not has_base:
        codes.append("missing-base")
    if count < spec.min_models or (spec.max_models is not None and count > spec.max_models):
        codes.append("model-count")
    return codes


def recipe(name: str, n: int, has_base: bool) -> str:
    models = ["base"] * has_base + [f"m{i}" for i in range(n)]
    lines = [f"  - model: org/{m}" for m in models]
    base = "base_model: org/base\n" if has_base else ""
    return f"models:\n{chr(10).join(lines)}\nmerge_method: {name}\n{base}parameters: {PARAMS}\n"


def merge_step(name: str, names: list[str], has_base: bool):  # type: ignore[no-untyped-def]
    base = {"base_model": "base"} if has_base else {}
    return step(name, models=tuple(inp(m) for m in names), parameters=PARAMS, **base)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_rules_reject_and_accept_as_declared_in_validation_and_planner(name: str) -> None:
    spec = METHODS[name]
    for n, has_base in shapes(spec):
        shape = (name, n, has_base)
        expected = declared(spec, n, has_base)
        names = ["base"] * has_base + [f"m{i}" for i in range(n)]
        errors = [
            p
            for p in spec.input_problems(names, "base" if has_base else None)
            if p.severity == "error"
        ]
        assert [p.code for p in errors] == expected, shape

        # validation: the same sentences (its models are called org/...), at YAML positions
        org = spec.input_problems([f"org/{m}" for m in names], "org/base" if has_base else None)
        _, problems = check_text(recipe(name, n, has_base), "r.yaml")
        said = sorted((p.code, p.message) for p in problems if p.code in RULES)
        assert said == sorted((p.code, p.message) for p in org if p.severity == "error"), shape
        assert all(p.line > 0 for p in problems if p.code in RULES), shape

        # the planner: the first of them, where it is, with its hint
        models = sources(*(llama(m) for m in names))
        if expected:
            with pytest.raises(LosslessError) as info:
                build_plan(merge_step(name, names, has_base), models)
            assert (info.value.message, info.value.hint) == (
                f"models: {errors[0].message}",
                errors[0].hint,
            ), shape
        else:
            assert build_plan(merge_step(name, names, has_base), models).jobs, shape


@pytest.mark.parametrize("name", sorted(n for n, s in METHODS.items() if s.base == "required"))
def test_missing_base_is_one_sentence_in_validation_and_planner(name: str) -> None:
    sentence = (
        f"{name} needs a `base_model` (the model the others were fine-tuned from); none is set"
    )
    count = max(METHODS[name].min_models, 1)
    names = [f"m{i}" for i in range(count)]
    _, problems = check_text(recipe(name, count, False), "r.yaml")
    assert [p.message for p in problems if p.code == "missing-base"] == [sentence]
    with pytest.raises(LosslessError) as info:
        build_plan(merge_step(name, names, False), sources(*(llama(m) for m in names)))
    assert info.value.message == f"models: {sentence}"


def test_count_sentence_names_method_expected_got_and_models() -> None:
    (problem,) = METHODS["slerp"].input_problems(["a", "b", "c"], "a")
    assert problem.message == "slerp takes exactly 1 model besides the base model; got 2 (b, c)"
    assert problem.hint == "remove 1 model, or use a method that takes more"
    missing, count = METHODS["slerp"].input_problems(["b", "c"], None)
    assert (missing.code, count.code) == ("missing-base", "model-count")
    assert count.hint == "if one of them is the base model, name it under `base_model:`"
    (problem,) = METHODS["model_stock"].input_problems(["base", "a"], "base")
    assert (
        problem.message == "model_stock takes at least 2 models besides the base model; got 1 (a)"
    )
    assert problem.hint == "the base model base is not counted; add 1 more model"
    (problem,) = METHODS["passthrough"].input_problems(["a", "b"], None)
    assert problem.message == "passthrough takes exactly 1 model; got 2 (a, b)"


def test_base_of_a_method_that_takes_none_is_a_warning_and_counts_as_an_input() -> None:
    text = "models:\n  - model: org/a\nmerge_method: passthrough\nbase_model: org/b\n"
    _, problems = check_text(text, "r.yaml")
    assert [(p.code, p.severity, p.line) for p in problems] == [
        ("model-count", "error", 1),
        ("unused-base", "warning", 4),
    ]
    assert problems[1].message == (
        "passthrough takes no base model: `base_model` org/b is merged as one more input model"
    )
    with pytest.raises(LosslessError, match=r"models: passthrough takes exactly 1 model; got 2"):
        build_plan(
            step("passthrough", models=(inp("a"),), base_model="b"),
            sources(llama("a"), llama("b")),
        )


def test_slice_base_not_among_its_sources_is_reported_by_validation_too() -> None:
    text = (
        "slices:\n  - sources:\n      - model: org/a\n        layer_range: [0, 2]\n"
        "    base_model: org/b\nmerge_method: ties\nparameters: {weight: 1}\n"
    )
    _, problems = check_text(text, "r.yaml")
    assert [(p.code, p.message) for p in problems if p.severity == "error"] == [
        ("base-not-listed", "base model org/b is not one of the slice's sources")
    ]
