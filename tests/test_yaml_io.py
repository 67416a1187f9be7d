"""YAML loading: floats, duplicate keys, tags, positions, multi-document files, syntax errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lossless.errors import RecipeInvalid
from lossless.recipe.yaml_io import load_documents, parse_documents


def test_exponent_without_dot_is_a_float() -> None:
    # PyYAML alone reads these as strings; a learning rate of "2e-5" would break training.
    assert yaml.safe_load("lr: 2e-5")["lr"] == "2e-5"
    ((data, _),) = parse_documents("lr: 2e-5\nb: 1E3\nc: .5\nd: 1_000\ne: 0x10\nf: -3.5e+2\n")[0]
    assert data == {"lr": 2e-5, "b": 1000.0, "c": 0.5, "d": 1000, "e": 16, "f": -350.0}
    assert isinstance(data["b"], float) and isinstance(data["d"], int)


def test_other_scalars_keep_yaml_meaning() -> None:
    ((data, _),) = parse_documents("a: yes\nb: ~\nc: '1e-4'\nd: 2024-01-01\ne: v1.2\n")[0]
    assert data == {"a": True, "b": None, "c": "1e-4", "d": "2024-01-01", "e": "v1.2"}


def test_positions_of_keys_and_values() -> None:
    ((_, pos),) = parse_documents("models:\n  - model: org/a\n    parameters: {weight: 0.5}\n")[0]
    assert pos[("models",)] == (1, 1)
    assert pos[("models", 0)] == (2, 5)
    assert pos[("models", 0, "parameters", "weight")] == (3, 18)
    assert pos.value_starts[("models", 0, "model")] == (2, 12)
    assert pos.value_at(("models", 0, "parameters", "weight")) == (3, 26)


def test_duplicate_key_reported_with_both_lines() -> None:
    docs, problems = parse_documents("a: 1\nb: 2\na: 3\n", "r.yaml")
    assert docs[0][0] == {"a": 1, "b": 2}  # the first value kept, the duplicate reported
    (p,) = problems
    assert (p.code, p.line, p.col, p.path) == ("duplicate-key", 3, 1, ("a",))
    assert "first written on line 1" in p.message


def test_python_tag_is_refused_not_constructed() -> None:
    _, problems = parse_documents("x: !!python/object/apply:os.system ['true']\n")
    assert [p.code for p in problems] == ["yaml-tag"]


def test_multi_document_file() -> None:
    docs, problems = parse_documents("name: a\nx: 1\n---\nname: b\ny: 2\n---\n")
    assert problems == []
    assert [d for d, _ in docs] == [{"name": "a", "x": 1}, {"name": "b", "y": 2}]
    assert docs[1][1][("y",)] == (5, 1)  # lines count from the top of the file


def test_anchor_merge_key() -> None:
    ((data, _),) = parse_documents("p: &w {weight: 1}\nq:\n  <<: *w\n  density: 0.5\n")[0]
    assert data["q"] == {"weight": 1, "density": 0.5}


@pytest.mark.parametrize(
    ("text", "code", "line", "col"),
    [
        ("a:\n\tb: 1\n", "yaml-tab", 2, 1),
        ("t:\n  \u2014 filter: x\n", "yaml-fake-bullet", 2, 3),
        ("a: [1, 2\nb: 3\n", "yaml-syntax", 1, 4),
        ("a: 'x\nb: 3\n", "yaml-syntax", 1, 4),
        ("a: 1\n b: 2\n", "yaml-syntax", 2, 3),
    ],
)
def test_syntax_problems_have_positions(text: str, code: str, line: int, col: int) -> None:
    docs, problems = parse_documents(text, "r.yaml")
    assert docs == []
    assert [(p.code, p.line, p.col) for p in problems] == [(code, line, col)]
    assert problems[0].source_line == text.splitlines()[line - 1]


def test_load_documents_raises_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("a: 1\na: 2\nb: !!python/name:os.system x\n")
    with pytest.raises(RecipeInvalid) as info:
        load_documents(path)
    assert [p.code for p in info.value.problems] == ["duplicate-key", "yaml-tag"]
    path.write_text("a: 1e-4\n")
    assert load_documents(path)[0][0] == {"a": 1e-4}
