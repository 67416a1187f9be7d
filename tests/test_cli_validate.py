"""`lossless validate` and `lossless plan` as a user runs them: exit codes, formats, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lossless.cli import main

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(str(p) for p in (ROOT / "recipes").glob("*.yaml"))
BAD = str(ROOT / "tests" / "invalid" / "density-out-of-range.yaml")
WARN = str(ROOT / "tests" / "invalid" / "tokenizer-source-in-parameters.yaml")


def test_validate_imports_no_torch() -> None:
    code = (
        "import sys; from lossless.cli import main; rc = main(['validate', *sys.argv[1:]]); "
        "assert rc == 0, rc; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'safetensors') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *RECIPES], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in out.stdout


def test_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *RECIPES]) == 0
    assert "ok: " in capsys.readouterr().out
    assert main(["validate", BAD, *RECIPES]) == 2
    assert "density" in capsys.readouterr().out
    assert main(["validate", WARN]) == 0
    assert main(["validate", "--strict", WARN]) == 2


def test_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "json", BAD]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["invalid"] == [BAD]
    (problem,) = report["problems"]
    assert problem["line"] == 3 and problem["col"] == 38
    assert problem["path"] == "models[0].parameters.density"
    assert problem["expected"] == "(0, 1]" and problem["got"] == "1.5"


def test_github_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "github", BAD]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"::error file={BAD},line=3,col=38,title=lossless param-range::")
    assert "\n" not in out  # one annotation per line; newlines inside are %0A


def test_missing_file_is_a_problem_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "no/such/recipe.yaml"]) == 2
    out = capsys.readouterr().out
    assert "cannot read the recipe: No such file or directory (no does not exist)" in out
    assert "hint: check the path" in out


def test_a_file_where_a_folder_must_be_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "recipes").write_text("a file, not a folder\n")
    assert main(["validate", str(tmp_path / "recipes" / "ties.yaml")]) == 2
    out = capsys.readouterr().out
    assert (
        f"cannot read the recipe: Not a directory ({tmp_path / 'recipes'} is a file, not a directory)"
        in out
    )
    assert "hint: a file stands where the path needs a folder" in out


def test_plan_json_and_dot(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = str(ROOT / "recipes" / "base-lora-ties.yaml")
    assert main(["plan", recipe, "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["steps"]
    assert [(s["name"], s["kind"], s["needs"]) for s in plan] == [
        ("new_skill", "train", []),
        ("adapted", "apply", ["new_skill"]),
        ("merged", "merge", ["adapted"]),
        ("forgetting", "eval", ["merged"]),
    ]
    assert main(["plan", recipe, "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert '"adapted" -> "merged";' in dot and dot.startswith("digraph")
    assert main(["plan", recipe]) == 0
    assert "new_skill" in capsys.readouterr().out
    assert main(["plan", BAD]) == 2
