"""Per-recipe state: recipes in one folder keep their steps in `.lossless/<recipe name>/`."""

from __future__ import annotations

import shutil
from pathlib import Path

from lossless.cli import main
from tests.factories import make_model, read_tensors

RECIPE = """\
models:
  - {{model: ./a, parameters: {{weight: {wa}}}}}
  - {{model: ./b, parameters: {{weight: {wb}}}}}
merge_method: linear
parameters: {{normalize: false}}
dtype: float32
"""


def test_two_recipes_in_one_folder_never_share_a_step(tmp_path: Path, capsys) -> None:
    make_model(tmp_path / "a", seed=1)
    make_model(tmp_path / "b", seed=2)
    (tmp_path / "one.yaml").write_text(RECIPE.format(wa=1.0, wb=0.0))
    (tmp_path / "two.yaml").write_text(RECIPE.format(wa=0.0, wb=1.0))
    assert main(["run", str(tmp_path / "one.yaml"), "-q"]) == 0
    assert main(["run", str(tmp_path / "two.yaml"), "-q"]) == 0
    a, b = read_tensors(tmp_path / "a"), read_tensors(tmp_path / "b")
    one = read_tensors(tmp_path / ".lossless" / "one" / "merged")
    two = read_tensors(tmp_path / ".lossless" / "two" / "merged")
    name = "model.norm.weight"
    assert (one[name] - a[name]).abs().max() < 1e-6  # both named `merged`, neither replaced
    assert (two[name] - b[name]).abs().max() < 1e-6
    assert main(["run", str(tmp_path / "one.yaml")]) == 0
    assert "fresh, skipped" in capsys.readouterr().err


def test_a_shared_work_dir_of_an_older_lossless_keeps_working(tmp_path: Path, capsys) -> None:
    make_model(tmp_path / "a", seed=1)
    make_model(tmp_path / "b", seed=2)
    (tmp_path / "one.yaml").write_text(RECIPE.format(wa=0.5, wb=0.5))
    assert main(["run", str(tmp_path / "one.yaml"), "-q"]) == 0
    # The layout of before: steps and .state directly in .lossless/.
    legacy = tmp_path / ".lossless"
    for entry in (legacy / "one").iterdir():
        shutil.move(str(entry), str(legacy / entry.name))
    (legacy / "one").rmdir()
    state = legacy / ".state" / "merged.json"
    state.write_text(state.read_text().replace(str(legacy / "one"), str(legacy)))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "one.yaml")]) == 0
    err = capsys.readouterr().err
    assert "holds the steps of every recipe in this folder" in err
    assert "fresh, skipped" in err
