"""The Python API (`lossless.run`, `lossless.validate`, `lossless.load_recipe`) does what the CLI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lossless
from lossless.errors import RecipeInvalid
from tests.factories import make_model, read_tensors

ROOT = Path(__file__).resolve().parents[1]


def test_import_lossless_stays_light() -> None:
    code = "import sys, lossless; lossless.validate('recipes/ties.yaml'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_validate_returns_every_problem_and_load_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - model: org/a\nmerge_method: tiess\n")
    problems = lossless.validate([ROOT / "recipes" / "ties.yaml", bad])
    assert [(p.file, p.line, p.code) for p in problems if p.severity == "error"] == [
        (str(bad), 3, "unknown-value")
    ]
    with pytest.raises(RecipeInvalid):
        lossless.load_recipe(bad)


def test_run_merges_and_reports_each_step(tmp_path: Path) -> None:
    make_model(tmp_path / "a", seed=1)
    make_model(tmp_path / "b", seed=2)
    recipe = tmp_path / "linear.yaml"
    recipe.write_text(
        "models:\n"
        "  - {model: ./a, parameters: {weight: 0.25}}\n"
        "  - {model: ./b, parameters: {weight: 0.75}}\n"
        "merge_method: linear\ndtype: float32\n"
    )
    out = tmp_path / "out"
    statuses = lossless.run(recipe, out=out, quiet=True, write_lock=False)
    assert {name: s.state for name, s in statuses.items()} == {"merged": "ran"}
    merged, a, b = read_tensors(out), read_tensors(tmp_path / "a"), read_tensors(tmp_path / "b")
    for name, value in merged.items():
        assert (value - (0.25 * a[name] + 0.75 * b[name])).abs().max() < 1e-6
    again = lossless.run(str(recipe), out=str(out), quiet=True, write_lock=False)
    assert again["merged"].state == "fresh"
