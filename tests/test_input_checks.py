"""Inputs against the recipe: tests/invalid_inputs/*.yaml name tiny models, adapters and data
files (tests/input_fixtures.py) that do not fit them; each rendering has a golden file, every
case fails `validate` and `run` with exit 2 at a file:line:col and writes nothing; checks that
only a run can make (an earlier step's output, NaN weights) stop the step before it writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lossless.cli import main
from lossless.validation.formatting import render_problems
from lossless.validation.recipe_check import check_text
from tests.input_fixtures import build_inputs

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "tests" / "invalid_inputs").glob("*.yaml"))
WARNING_ONLY = {"implicit-donor.yaml"}
BAD_RECIPES = sorted((ROOT / "tests" / "invalid").glob("*.yaml")) + CASES


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_inputs(tmp_path_factory.mktemp("inputs"))


def _copy(case: Path, root: Path) -> Path:
    return Path(shutil.copy(case, root / case.name))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_input_problem_matches_golden(case: Path, inputs: Path) -> None:
    """Regenerate with LOSSLESS_UPDATE_GOLDEN=1 after an intended wording change."""
    rel = case.relative_to(ROOT).as_posix()
    _, problems = check_text(case.read_text(encoding="utf-8"), rel, recipe_dir=inputs)
    text = render_problems(problems, "text").replace(str(inputs), "<inputs>") + "\n"
    golden = case.with_suffix(".txt")
    if os.environ.get("LOSSLESS_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    assert all(p.line > 0 for p in problems)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_run_stops_before_any_work(
    case: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _copy(case, inputs)
    strict = ["--strict"] if case.name in WARNING_ONLY else []
    work = tmp_path / "work"
    assert main(["run", str(recipe), "--work-dir", str(work), *strict]) == 2
    err = capsys.readouterr().err
    assert f"{case.name}:" in err and "Traceback" not in err
    assert not work.exists() and not (inputs / "merged").exists()
    assert main(["validate", str(recipe), *strict]) == 2


def test_earlier_step_output_checked_when_the_step_starts(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = inputs / "two-stages.yaml"
    recipe.write_text(
        "name: first\nmodels:\n  - model: ./llama\n    parameters: {weight: 0.5}\n"
        "  - model: ./llama-b\n    parameters: {weight: 0.5}\nmerge_method: linear\n---\n"
        "name: second\nmodels:\n  - model: first\n    parameters: {weight: 0.5}\n"
        "  - model: ./qwen2\n    parameters: {weight: 0.5}\nmerge_method: linear\n"
    )
    work = tmp_path / "work"
    assert main(["validate", str(recipe)]) == 0  # `first` has no files yet
    assert main(["run", "-q", str(recipe), "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err
    assert "two-stages.yaml:13:12" in err
    assert "`first` is LlamaForCausalLM but `./qwen2` is Qwen2ForCausalLM" in err
    assert (work / "first").is_dir() and not (work / "second").exists()
    # the runner makes the partial dir before the step starts; the step wrote nothing into it
    assert all(not any(p.iterdir()) for p in work.glob(".second.partial-*"))


def test_non_finite_weights_stop_the_merge_naming_the_tensor(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = inputs / "nan-merge.yaml"
    recipe.write_text(
        "models:\n  - model: ./nan\n    parameters: {weight: 0.5}\n"
        "  - model: ./llama\n    parameters: {weight: 0.5}\nmerge_method: linear\n"
    )
    out = tmp_path / "out"
    assert main(["run", "-q", str(recipe), str(out), "--work-dir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "tensor 'model.norm.weight'" in err and "1 NaN" in err and "--allow-non-finite" in err
    assert not out.exists()
    args = ["run", "-q", str(recipe), str(out), "--work-dir", str(tmp_path / "w")]
    assert main([*args, "--allow-non-finite"]) == 0
    assert (out / "config.json").is_file()


@pytest.mark.parametrize("case", BAD_RECIPES, ids=lambda p: p.stem)
def test_no_bad_recipe_gives_a_traceback(
    case: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad recipe the project ships, through `validate` and `run` (--strict: a
    warning-only case stops too, so nothing reaches the network)."""
    recipe = _copy(case, tmp_path) if case.parent.name == "invalid" else _copy(case, inputs)
    assert main(["validate", str(recipe)]) in (0, 2)
    assert main(["run", "--strict", str(recipe), "--work-dir", str(tmp_path / "w")]) == 2
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert "Traceback" not in text and "internal error" not in text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("long-prompts.jsonl", "4 of 4 example(s) lose their whole answer to max_seq_length 16"),
        ("latin1.jsonl", "latin1.jsonl:1: not UTF-8 text (byte 0xe9 at offset 13)"),
        ("not-rows.jsonl", "not-rows.jsonl: row 2: expected a JSON object, got list"),
    ],
)
def test_bad_training_data_fails_the_step_with_file_and_row(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], data: str, message: str
) -> None:
    recipe = inputs / f"train-{data}.yaml"
    recipe.write_text(
        f"train:\n  tuned:\n    base: ./llama\n    data: {data}\n    max_seq_length: 16\n"
    )
    assert main(["run", "-q", str(recipe), "--work-dir", str(tmp_path / "w")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert message in err
    assert not (tmp_path / "w" / "tuned").exists()
