"""One output rule for `validate` and `run`: lossless never replaces what it did not write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.cli import main
from lossless.validation.outputs import OutputRule
from lossless.validation.recipe_check import check_text
from tests.factories import make_model

RECIPE = """\
models:
  - model: {a}
    parameters: {{weight: 0.5}}
  - model: {b}
    parameters: {{weight: 0.5}}
merge_method: linear
dtype: float32
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_model(root / "a", seed=1)
    make_model(root / "b", seed=2)
    return root


def recipe(folder: Path, models: Path, output: str | None = None, name: str = "r.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = RECIPE.format(a=models / "a", b=models / "b")
    path = folder / name
    path.write_text(text + (f"output: {output}\n" if output else ""))
    return path


def problems(path: Path, **kw: bool) -> list[str]:
    _, found = check_text(path.read_text(), str(path), recipe_dir=path.parent, **kw)
    return [p.message for p in found if p.code == "output-path"]


def test_validate_refuses_what_publishing_would_destroy(tmp_path: Path, models: Path) -> None:
    folder = tmp_path / "project"
    assert problems(recipe(folder, models, ".")) == [
        "`output: .` is the recipe's folder: publishing would replace all of it"
    ]
    assert "is the work dir" in problems(recipe(folder, models, ".lossless/r"))[0]
    assert "contains the work dir" in problems(recipe(folder, models, ".lossless"))[0]
    (folder / "userdata").mkdir()
    (folder / "userdata" / "thesis.tex").write_text("years of work")
    found = problems(recipe(folder, models, "userdata"))
    assert len(found) == 1 and "1 file(s) lossless did not write (thesis.tex)" in found[0]
    assert problems(recipe(folder, models, "userdata"), overwrite=True) == []
    assert problems(recipe(folder, models, "new/merged")) == []


@pytest.mark.parametrize("output", ["../../x", "/tmp/elsewhere", "~/.ssh/x"])
def test_validate_exits_2_on_escaping_output(tmp_path: Path, models: Path, output: str) -> None:
    path = recipe(tmp_path, models, output)
    assert main(["validate", str(path)]) == 2


def test_home_and_inputs_are_refused(
    tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rule = OutputRule(tmp_path / "p" / "r.yaml", tmp_path / "p" / ".lossless", [models / "a"])
    assert "is your home directory" in rule.problems(tmp_path / "home")[0][0]
    assert "is or contains the input" in rule.problems(models / "a" / "sub")[0][0]
    assert "is or contains the input" in rule.problems(models)[0][0]
    assert rule.problems(tmp_path / "home" / "merged") == []


def test_run_never_replaces_a_folder_of_the_users(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recipe(tmp_path / "p", models, ".")
    before = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert main(["run", str(path), "--quiet"]) == 2
    assert "is the recipe's folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == before

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    path = recipe(tmp_path / "p", models)
    assert main(["run", str(path), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    # --overwrite publishes, and the user's folder is moved aside, not deleted
    assert main(["run", str(path), str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "lossless-manifest.json").is_file()
    (kept,) = tmp_path.glob("out.replaced-*")
    assert (kept / "notes.txt").read_text() == "mine"


def test_rerun_over_own_output_but_not_another_recipes(tmp_path: Path, models: Path) -> None:
    out = tmp_path / "out"
    first = recipe(tmp_path / "p", models)
    assert main(["run", str(first), str(out), "--quiet"]) == 0
    manifest = json.loads((out / "lossless-manifest.json").read_text())
    assert manifest["recipe"] == {"path": str(first.resolve()), "name": "r.yaml"}
    assert set(manifest["sizes"]) == set(manifest["files"])
    assert main(["run", str(first), str(out), "--quiet", "--force", "merged"]) == 0
    other = recipe(tmp_path / "q", models, name="other.yaml")
    assert main(["run", str(other), str(out), "--quiet"]) == 2
    (out / "mine.txt").write_text("added by the user")  # now it holds a file lossless did not write
    assert main(["run", str(first), str(out), "--quiet", "--force", "merged"]) == 2
    assert (out / "mine.txt").exists()


def test_publish_keeps_a_foreign_folder(tmp_path: Path) -> None:
    from lossless.engine.publish import publish

    partial, target = tmp_path / ".t.partial", tmp_path / "t"
    partial.mkdir()
    (partial / "a.txt").write_text("new")
    target.mkdir()
    (target / "b.txt").write_text("user's")
    kept = publish(partial, target, "f")
    assert kept is not None and (kept / "b.txt").read_text() == "user's"
    partial.mkdir()
    (partial / "a.txt").write_text("newer")
    assert publish(partial, target, "f") is None  # the old one was all ours: deleted
    assert (target / "a.txt").read_text() == "newer"
