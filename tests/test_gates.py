"""Gates on crafted numbers: relative and absolute max_regression, min_score, and the messages."""

from __future__ import annotations

import math

import pytest

from lossless.errors import LosslessError
from lossless.evaluation.gates import check_gates, default_metric, regression
from lossless.evaluation.skills import dataset_skills

SKILLS = dataset_skills({"general": "chat", "code": "text"})


def scores(general_em: float, code_loss: float, ref_em: float = 0.80, ref_loss: float = 2.0):
    return {
        "base": {"general": {"exact_match": ref_em, "loss": 1.0}, "code": {"loss": ref_loss}},
        "merged": {
            "general": {"exact_match": general_em, "loss": 1.1},
            "code": {"loss": code_loss},
        },
    }


def test_regression_closed_form() -> None:
    assert regression("exact_match", 0.72, 0.80) == pytest.approx(0.10)  # (0.80 - 0.72) / 0.80
    assert regression("exact_match", 0.72, 0.80, relative=False) == pytest.approx(0.08)
    assert regression("loss", 2.2, 2.0) == pytest.approx(0.10)  # loss up by 10 %
    assert regression("perplexity", 9.0, 10.0) == pytest.approx(-0.10)  # better
    assert regression("exact_match", 0.5, 0.0) == 0.0
    assert regression("exact_match", 0.0, 0.0) == 0.0
    assert math.isinf(regression("loss", 0.1, 0.0))
    assert default_metric("chat") == default_metric("instruction") == "exact_match"
    assert default_metric("completion") == default_metric("text") == "loss"


def test_relative_gate_passes_at_and_below_threshold() -> None:
    gate = {"general": {"max_regression": 0.10}}  # exact_match by default for chat data
    # 0.72 vs 0.80 is exactly 10 % worse: allowed (the limit is inclusive).
    assert check_gates(gate, scores(0.72, 2.0), reference="base", skills=SKILLS) == []
    assert check_gates(gate, scores(0.90, 2.0), reference="base", skills=SKILLS) == []


def test_relative_gate_fails_with_message() -> None:
    gate = {"general": {"max_regression": 0.02}}
    [breach] = check_gates(gate, scores(0.70, 2.0), reference="base", skills=SKILLS)
    assert (breach.model, breach.dataset, breach.metric) == ("merged", "general", "exact_match")
    assert breach.value == 0.70 and breach.threshold == 0.02 and breach.reference_value == 0.80
    assert breach.message() == (
        "merged on general: exact_match 0.7000 regressed 12.50 % vs base (0.8000); "
        "max_regression is 2 % (relative)"
    )


def test_absolute_gate_on_loss() -> None:
    gate = {"code": {"max_regression": 0.25, "relative": False}}  # loss by default on text data
    assert check_gates(gate, scores(0.8, 2.25), reference="base", skills=SKILLS) == []
    [breach] = check_gates(gate, scores(0.8, 2.5), reference="base", skills=SKILLS)
    assert breach.metric == "loss" and not breach.relative
    assert breach.message() == (
        "merged on code: loss 2.5000 regressed 0.5000 vs base (2.0000); "
        "max_regression is 0.25 (absolute)"
    )
    # A lower loss is never a regression, however large the change.
    assert check_gates(gate, scores(0.8, 0.5), reference="base", skills=SKILLS) == []


def test_min_score_floor_and_ceiling() -> None:
    floor = {"general": {"min_score": 0.75}}
    assert check_gates(floor, scores(0.75, 2.0), reference="base", skills=SKILLS) == []
    [breach] = check_gates(floor, scores(0.5, 2.0), reference="base", skills=SKILLS)
    assert breach.rule == "min_score"
    assert (
        breach.message()
        == "merged on general: exact_match 0.5000 is below the minimum min_score 0.75"
    )
    # For loss the "worst acceptable score" is a ceiling.
    ceiling = {"code": {"min_score": 2.1}}
    assert check_gates(ceiling, scores(0.8, 2.0), reference="base", skills=SKILLS) == []
    [breach] = check_gates(ceiling, scores(0.8, 2.3), reference="base", skills=SKILLS)
    assert "loss 2.3000 is above the maximum min_score 2.1" in breach.message()


def test_reference_is_not_gated_and_all_breaches_reported() -> None:
    gate = {
        "general": {"max_regression": 0.0, "min_score": 0.9},
        "code": {"metric": "loss", "max_regression": 0.01},
    }
    # The reference (0.80) is below min_score 0.9 itself but is the yardstick, so it is not gated.
    breaches = check_gates(gate, scores(0.79, 2.1), reference="base", skills=SKILLS)
    assert [(b.dataset, b.rule) for b in breaches] == [
        ("general", "min_score"),
        ("general", "max_regression"),
        ("code", "max_regression"),
    ]
    assert all(b.model == "merged" for b in breaches)


def test_gate_mistakes_are_clear_errors() -> None:
    with pytest.raises(
        LosslessError, match="'missing', which is no dataset of this eval step's `data:` nor a task"
    ):
        check_gates({"missing": {"min_score": 1}}, scores(0.8, 2), reference="base", skills=SKILLS)
    with pytest.raises(LosslessError, match="metric 'exact_match', which was not measured"):
        check_gates(
            {"code": {"metric": "exact_match", "min_score": 0.5}},
            scores(0.8, 2),
            reference="base",
            skills=SKILLS,
        )
