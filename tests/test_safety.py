"""A recipe from elsewhere cannot write outside its roots or switch on code execution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lossless.errors import LosslessError
from lossless.validation.safety import (
    check_output_path,
    code_execution_problems,
    code_execution_requests,
)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    recipe_dir, work = tmp_path / "recipe", tmp_path / "recipe" / ".lossless"
    work.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    return recipe_dir, work


def test_paths_inside_the_roots_are_allowed(roots: tuple[Path, Path]) -> None:
    recipe_dir, work = roots
    allowed = [work, recipe_dir]
    assert (
        check_output_path("out/model", allowed, False, base=recipe_dir) == recipe_dir / "out/model"
    )
    # `..` that stays inside is fine: .lossless/x/../y is .lossless/y
    got = check_output_path(".lossless/x/../y", allowed, False, base=recipe_dir)
    assert got == work / "y"
    assert check_output_path("step1", [work], False) == work / "step1"  # base = first root
    (recipe_dir / "inner").symlink_to(work)  # a symlink that stays inside
    assert check_output_path("inner/z", allowed, False, base=recipe_dir) == work / "z"


def test_absolute_paths_rejected(roots: tuple[Path, Path]) -> None:
    _, work = roots
    with pytest.raises(LosslessError) as info:
        check_output_path("/etc/cron.d/x", [work], False, what="`output:` of r.yaml")
    text = str(info.value)
    assert "`output:` of r.yaml '/etc/cron.d/x' is an absolute path" in text
    assert str(work) in text and "command line" in text
    with pytest.raises(LosslessError, match="absolute path"):
        check_output_path("~/.bashrc", [work], False)


def test_dotdot_escape_rejected(roots: tuple[Path, Path]) -> None:
    recipe_dir, work = roots
    with pytest.raises(LosslessError, match=r"climbs out with `\.\.`") as info:
        check_output_path("../../elsewhere/x", [work, recipe_dir], False, base=recipe_dir)
    assert str(recipe_dir.parent.parent / "elsewhere" / "x") in str(info.value)


def test_symlink_escape_rejected(roots: tuple[Path, Path], tmp_path: Path) -> None:
    _, work = roots
    (work / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LosslessError) as info:
        check_output_path("link/model", [work], False)
    text = str(info.value)
    assert f"the symlink {work / 'link'}" in text and str(tmp_path / "elsewhere" / "model") in text


def test_cli_paths_are_the_users_choice(roots: tuple[Path, Path], tmp_path: Path) -> None:
    _, work = roots
    assert check_output_path(tmp_path / "elsewhere", [work], True) == tmp_path / "elsewhere"
    rel = check_output_path("../x", [work], True)
    assert rel == Path(os.getcwd()) / "../x"
    with pytest.raises(LosslessError, match="may not choose where to write"):
        check_output_path("x", [], False)


RECIPE = """\
models:
  - model: org/a
    trust_remote_code: true
  - model: org/b
    trust_remote_code: false
merge_method: linear
train:
  s:
    base: org/a
    model_kwargs: {trust-remote-code: "yes", weights_only: false}
eval:
  e:
    lm_eval: {allow_code_execution: true}
lazy_unpickle: true
"""


def test_code_execution_requests_found_everywhere() -> None:
    requests = code_execution_requests(list(yaml.safe_load_all(RECIPE)))
    assert requests == [
        ((0, "models", 0, "trust_remote_code"), "--trust-remote-code"),
        ((0, "train", "s", "model_kwargs", "trust-remote-code"), "--trust-remote-code"),
        ((0, "train", "s", "model_kwargs", "weights_only"), "--allow-pickle"),
        ((0, "eval", "e", "lm_eval", "allow_code_execution"), "--trust-remote-code"),
        ((0, "lazy_unpickle"), "--allow-pickle"),
    ]
    assert code_execution_requests([{"models": [{"model": "a"}]}, {"weights_only": True}]) == []


def test_code_execution_problems_name_the_flag() -> None:
    docs = list(yaml.safe_load_all(RECIPE))
    positions = {("models", 0, "trust_remote_code"): (3, 5)}
    problems = code_execution_problems(docs, "r.yaml", positions=positions)
    assert len(problems) == 5
    first = problems[0]
    assert (first.file, first.line, first.col, first.code) == ("r.yaml", 3, 5, "code-execution")
    assert first.message.startswith("`models[0].trust_remote_code` asks to run code")
    assert first.hint is not None and "pass --trust-remote-code on the command line" in first.hint
    granted = code_execution_problems(docs, "r.yaml", granted={"--trust-remote-code"})
    assert [p.path[-1] for p in granted] == ["weights_only", "lazy_unpickle"]
    assert all("--allow-pickle" in (p.hint or "") for p in granted)
    two = code_execution_problems([{"name": "a"}, {"trust_remote_code": True}], "m.yaml")
    assert two[0].path == (1, "trust_remote_code")  # several documents: the index stays
