"""The eval table on an 80-column terminal: four models fit, each change under its value."""

from __future__ import annotations

import io

from rich.console import Console

from lossless.evaluation.report import render_table
from lossless.evaluation.skills import SkillInfo

SKILLS = {
    "A": SkillInfo("A", "a.jsonl", "chat", "old", "exact_match"),
    "C": SkillInfo("C", "c.jsonl", "chat", "new", "exact_match"),
}


def scores(*models: str) -> dict:
    values = {"instruct": (1.0, 0.17), "base": (0.005, 0.19), "naive": (0.01, 0.825)}
    values["merged"] = (1.0, 0.735)
    return {
        m: {"A": {"exact_match": values[m][0]}, "C": {"exact_match": values[m][1]}} for m in models
    }


def rendered(table) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(table)
    return out.getvalue().splitlines()


def test_four_models_stack_each_change_under_its_value() -> None:
    lines = rendered(
        render_table(scores("instruct", "base", "naive", "merged"), "instruct", SKILLS, "t")
    )
    assert all(len(line) <= 80 for line in lines)
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert cells[0] == ["A (old)", "exact_match ↑", "1.0000", "0.0050", "0.0100", "1.0000"]
    assert cells[1] == ["", "", "", "0.5 %", "1.0 %", "100.0 %"]
    assert cells[3] == ["", "", "", "+0.0200", "+0.6550", "+0.5650"]  # C's gains
    assert "gate" not in "".join(lines)  # no gates, no gate column


def test_two_models_keep_value_and_change_on_one_line_with_the_gate() -> None:
    gates = {"A": {"max_regression": 0.05}}
    lines = rendered(render_table(scores("instruct", "merged"), "instruct", SKILLS, "t", gates, []))
    row = next(line for line in lines if line.startswith("│ A (old)"))
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        "A (old)",
        "exact_match ↑",
        "1.0000",
        "1.0000  100.0 %",
        "max_regression 5 %",
    ]
