"""`lossless push` against the fake hub: a finished run's merge with its card, recipe, lock and
eval results; refused while a gate fails (unless --force) or the run has not finished."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from lossless.cli import main as cli
from tests.factories import make_model, write_jsonl
from tests.fake_hub import FakeHub, use_fake_hub

TEXT = [{"text": f"the quick brown fox {i} jumps over the lazy dog"} for i in range(4)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("push-models")
    make_model(root / "base", seed=0)
    make_model(root / "ft", seed=1)
    return root


def recipe_text(ceiling: float) -> str:
    # a linear merge of a hub model and a local one, evaluated against the hub model
    return textwrap.dedent(
        f"""\
        models:
          - model: org/base
            parameters: {{weight: 0.5}}
          - model: ./models/ft
            parameters: {{weight: 0.5}}
        merge_method: linear
        dtype: float32
        eval:
          forgetting:
            models: [org/base, merged]
            data: {{general: data/general.jsonl}}
            batch_size: 2
            gate: {{general: {{min_score: {ceiling}}}}}
        """
    )


@pytest.fixture
def hub(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeHub()
    fake.add_commit("org/base", models / "base")
    with fake.serving():
        use_fake_hub(fake, monkeypatch, tmp_path / "hf")
        yield fake


def project(tmp_path: Path, models: Path, ceiling: float) -> Path:
    import shutil

    shutil.copytree(models / "ft", tmp_path / "models" / "ft")
    write_jsonl(tmp_path / "data" / "general.jsonl", TEXT)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text(ceiling))
    return recipe


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_push_a_finished_run(hub: FakeHub, tmp_path: Path, models: Path, capsys) -> None:
    recipe = project(tmp_path, models, ceiling=1000.0)  # a loss ceiling every model passes
    assert cli(["push", str(recipe), "me/merged"]) == 1
    assert "merge merged has no finished output to push" in capsys.readouterr().err
    assert cli(["run", str(recipe)]) == 0
    summary = capsys.readouterr().err
    assert "run finished in" in summary and "eval forgetting: passed" in summary
    assert f"output  {tmp_path / '.lossless' / 'recipe' / 'merged'} (" in summary
    assert cli(["push", str(recipe), "me/merged", "--private"]) == 0
    assert "pushed: " in capsys.readouterr().out
    assert hub.created[-1]["visibility"] == "private"
    files = hub.files("me/merged")
    assert {"config.json", "lossless.yaml", "lossless.lock", "README.md"} <= set(files)
    assert {"eval/forgetting/eval.json", "eval/forgetting/eval.png"} <= set(files)
    assert "lossless-manifest.json" not in files
    assert any(name.endswith(".safetensors") for name in files)
    assert files["lossless.yaml"].decode() == recipe.read_text()

    card = files["README.md"].decode()
    front = front_matter(card)
    assert front["base_model"] == ["org/base"] and front["base_model_relation"] == "merge"
    assert front["tags"] == ["lossless", "mergekit", "merge", "linear"]
    results = front["model-index"][0]["results"]
    assert results[0]["dataset"]["name"] == "general"
    assert results[0]["metrics"][0]["type"] == "loss"
    saved = json.loads(files["eval/forgetting/eval.json"])
    assert results[0]["metrics"][0]["value"] == pytest.approx(
        saved["scores"]["merged"]["general"]["loss"], abs=1e-6
    )
    assert "- ft (local)" in card and "lossless run hub:me/merged" in card
    assert str(tmp_path) not in card  # no path of this machine in a public card

    # the pushed repo reproduces: its recipe is found again by `lossless run hub:me/merged`
    from lossless.hub.reproduce import find_recipe

    (tmp_path / "pulled").mkdir()
    (tmp_path / "pulled" / "README.md").write_bytes(files["README.md"])
    assert find_recipe(tmp_path / "pulled")[1] == recipe.read_text()


def test_push_refuses_a_failed_gate_unless_forced(
    hub: FakeHub, tmp_path: Path, models: Path, capsys
) -> None:
    recipe = project(tmp_path, models, ceiling=1000.0)
    # an override of the gate: no model has a loss that low
    assert cli(["run", str(recipe), "--set", "eval.forgetting.gate.general.min_score=0.001"]) == 1
    assert "run stopped after" in capsys.readouterr().err  # the summary, before the error
    recipe.write_text(recipe_text(0.001))  # the same recipe in the file: fresh, gates judged again
    assert cli(["run", str(recipe), "--quiet"]) == 1
    assert cli(["push", str(recipe), "me/merged"]) == 1
    err = capsys.readouterr().err
    assert "refusing to push merged: its gates failed" in err and "min_score" in err
    assert "me/merged" not in hub.repos
    assert cli(["push", str(recipe), "me/merged", "--force"]) == 0
    assert hub.commits_made[-1][1] == "lossless push of merged (forced: 1 gate(s) failed)"


def test_push_a_directory_and_dry_run(hub: FakeHub, tmp_path: Path, models: Path, capsys) -> None:
    assert cli(["push", str(models / "ft"), "me/ft", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "README.md" in out and "me/ft" not in hub.repos
    assert cli(["push", str(models / "ft"), "me/ft"]) == 0
    files = hub.files("me/ft")
    assert "config.json" in files and front_matter(files["README.md"].decode())["tags"] == [
        "lossless"
    ]
    assert cli(["push", str(models / "ft"), "me/ft"]) == 0  # the repo exists: a second commit
    assert [c for c in hub.commits_made if c[0] == "me/ft"] == [
        ("me/ft", "lossless push of ft")
    ] * 2


def test_push_without_write_access_says_so(hub: FakeHub, models: Path) -> None:
    from lossless.errors import LosslessError

    hub.read_only = True
    from lossless.hub.push import plan_dir_push, upload

    with pytest.raises(LosslessError, match=r"no write access to me/ft \(HTTP 403\)"):
        upload(plan_dir_push(models / "ft", "me/ft"))
