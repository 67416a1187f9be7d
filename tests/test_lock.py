"""RECIPE.lock: which inputs a recipe has, their hashes/commits, and `--locked` mismatches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lossless.cli import main as cli
from lossless.engine.lockfile import (
    Input,
    compare_lock,
    hash_local,
    lock_entries,
    lock_path,
    locked_revision,
    read_lock,
    recipe_inputs,
    write_lock,
)
from lossless.errors import LosslessError
from lossless.recipe.build import build_recipe
from tests.fake_hub import FakeHub, use_fake_hub, write_tiny_safetensors

RECIPE = """\
# lock test recipe
train:
  skill:
    base: org/tiny
    data: data/skill.jsonl
    replay: {data: data/general.jsonl, fraction: 0.1}
apply:
  adapted: {adapter: skill, to: models/local}
models:
  - model: adapted
  - model: org/pinned@{pinned}
base_model: org/tiny
tokenizer_source: base
merge_method: linear
parameters: {weight: 1.0}
eval:
  forgetting:
    models: [org/tiny, merged]
    data: {general: {path: data/general.jsonl, role: old}, hub_set: hf://datasets/org/data}
"""


def make_recipe(root: Path, pinned: str = "0" * 40) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "skill.jsonl").write_text('{"text": "a"}\n')
    (root / "data" / "general.jsonl").write_text('{"text": "b"}\n')
    write_tiny_safetensors(root / "models" / "local" / "model.safetensors", {"w": [1.0, 2.0]})
    (root / "models" / "local" / "config.json").write_text('{"model_type": "llama"}')
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.replace("{pinned}", pinned))
    return recipe


def test_recipe_inputs_skip_step_names_and_split_lora() -> None:
    import yaml

    docs = [yaml.safe_load(RECIPE.replace("{pinned}", "abc"))]
    docs.append({"name": "second", "models": [{"model": "merged+org/lora"}], "merge_method": "x"})
    refs = [i.ref for i in recipe_inputs(build_recipe("r.yaml", docs))]
    assert refs == [
        "org/tiny",  # train.skill.base
        "data/skill.jsonl",
        "data/general.jsonl",
        "models/local",  # apply.adapted.to; `adapter: skill` is a step
        "org/tiny",  # base_model; `tokenizer_source: base` is not a reference
        "org/pinned@abc",
        "org/tiny",  # eval models; `merged` is a step
        "data/general.jsonl",  # eval data {path: ...}
        "hf://datasets/org/data",
        "org/lora",  # `merged+org/lora`: the merge stage is a step, the adapter is an input
    ]
    found = {i.ref: i for i in recipe_inputs(build_recipe("r.yaml", docs[:1]))}
    assert found["models/local"] == Input((0, "apply", "adapted", "to"), "models/local", "model")
    assert found["data/skill.jsonl"].kind == "data"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeHub()
    fake.add_commit("org/tiny", {"config.json": b'{"v": 1}', "model.safetensors": b"12345678"})
    fake.add_commit("org/pinned", {"config.json": b"{}"})
    fake.add_commit("datasets/org/data", {"train.jsonl": b"{}"})
    with fake.serving():
        use_fake_hub(fake, monkeypatch, tmp_path / "hf")
        yield fake


def test_lock_then_branch_moves(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = hub.resolve("org/pinned", "main")
    assert pinned is not None
    recipe = make_recipe(tmp_path / "r", pinned=pinned)
    assert cli(["lock", str(recipe)]) == 0
    lock = json.loads(lock_path(recipe).read_text())
    assert lock["recipe"] == "recipe.yaml"
    inputs = lock["inputs"]
    assert inputs["org/tiny"] == {
        "kind": "hub",
        "repo": "org/tiny",
        "revision": "main",
        "commit": hub.resolve("org/tiny", "main"),
    }
    assert inputs[f"org/pinned@{pinned}"]["commit"] == pinned
    assert inputs["hf://datasets/org/data"] == {
        "kind": "hub",
        "repo": "org/data",
        "repo_type": "dataset",
        "revision": "main",
        "commit": hub.resolve("datasets/org/data", "main"),
    }
    skill = (tmp_path / "r" / "data" / "skill.jsonl").read_bytes()
    assert inputs["data/skill.jsonl"] == {
        "kind": "file",
        "size": len(skill),
        "sha256": hashlib.sha256(skill).hexdigest(),
    }
    assert inputs["models/local"]["kind"] == "model_dir"
    assert not [p for m, p, _ in hub.requests if "/resolve/" in p]  # locking downloads nothing
    assert cli(["lock", str(recipe), "--check"]) == 0

    old_commit = hub.resolve("org/tiny", "main")
    new_commit = hub.add_commit("org/tiny", {"config.json": b'{"v": 2}'})  # the branch moves
    hub.add_commit("org/pinned", {"config.json": b'{"changed": true}'})  # pinned: no effect
    capsys.readouterr()
    assert cli(["lock", str(recipe), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"org/tiny: main now resolves to commit {new_commit[:12]}" in err
    assert f"the lock pins {old_commit[:12]}" in err
    assert f"org/tiny@{old_commit}" in err  # how to keep the old one
    assert "1 difference(s)" in err and "org/pinned" not in err
    assert "lossless lock" in err  # how to accept the new one
    assert cli(["lock", str(recipe)]) == 0
    assert cli(["lock", str(recipe), "--check"]) == 0
    assert locked_revision(read_lock(lock_path(recipe)), "org/tiny") == new_commit
    assert locked_revision(read_lock(lock_path(recipe)), "data/skill.jsonl") is None


def test_local_changes_detected(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path)
    inputs = [Input((0, "x"), "data/skill.jsonl", "data"), Input((0, "y"), "models/local", "model")]
    before = lock_entries(inputs, tmp_path, resolve_commit=lambda ref: "c" * 40)
    write_lock(recipe, before)
    first = lock_path(recipe).read_bytes()
    write_lock(recipe, before)
    assert lock_path(recipe).read_bytes() == first  # deterministic: no timestamps
    assert read_lock(lock_path(recipe)) == before

    (tmp_path / "data" / "skill.jsonl").write_text('{"text": "changed"}\n')
    model = tmp_path / "models" / "local"
    write_tiny_safetensors(model / "model.safetensors", {"w": [1.0, 2.0, 3.0]})  # a new shape
    after = lock_entries(inputs, tmp_path, resolve_commit=lambda ref: "c" * 40)
    differences = compare_lock(before, after)
    assert len(differences) == 2
    assert differences[0].startswith("data/skill.jsonl: content changed since it was locked")
    assert differences[1].startswith("models/local: content changed")

    # Content, not shapes: new values of the same shapes (a model retrained in place) differ.
    write_tiny_safetensors(model / "model.safetensors", {"w": [9.0, 9.0, 9.0]})
    retrained = hash_local(model)
    assert retrained != after["models/local"]
    assert hash_local(model) == retrained  # the same bytes again: the same hash
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    assert hash_local(model) != retrained


def test_compare_lock_added_removed_kind() -> None:
    old = {"a": {"kind": "file", "sha256": "1"}, "b": {"kind": "file", "sha256": "2"}}
    new = {"a": {"kind": "dir", "sha256": "1"}, "c": {"kind": "file", "sha256": "3"}}
    assert compare_lock(old, new) == [
        "a: was a file when locked, is now a dir",
        "b: in the lock but no longer used by the recipe",
        "c: a new input, not in the lock",
    ]
    assert compare_lock(old, old) == []


def test_missing_input_and_bad_lock_files(tmp_path: Path) -> None:
    with pytest.raises(LosslessError, match=r"data/nope\.jsonl \(at train\.s\.data\)"):
        lock_entries([Input((0, "train", "s", "data"), "data/nope.jsonl", "data")], tmp_path)
    with pytest.raises(LosslessError, match="does not exist"):
        read_lock(tmp_path / "r.lock")
    (tmp_path / "r.lock").write_text("{not json")
    with pytest.raises(LosslessError, match="not valid JSON"):
        read_lock(tmp_path / "r.lock")
    (tmp_path / "r.lock").write_text('{"inputs": {}}')
    with pytest.raises(LosslessError, match="not a lossless lock file"):
        read_lock(tmp_path / "r.lock")


def test_corrupt_safetensors_header_is_an_error(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(LosslessError, match="corrupt safetensors header"):
        hash_local(model)


def test_content_hashes_are_remembered_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lossless.engine import content_hash

    reads: list[Path] = []
    real = content_hash.sha256_file
    monkeypatch.setattr(content_hash, "sha256_file", lambda p: reads.append(p) or real(p))
    monkeypatch.setenv("LOSSLESS_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m"
    write_tiny_safetensors(model / "model.safetensors", {"w": [1.0, 2.0]})
    first = hash_local(model)
    assert hash_local(model) == first and len(reads) == 1  # the second look is the cache's
    write_tiny_safetensors(model / "model.safetensors", {"w": [1.0, 2.5]})  # same shapes
    assert hash_local(model) != first and len(reads) == 2


def test_lock_check_detects_a_model_changed_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "r"
    write_tiny_safetensors(root / "models" / "a" / "model.safetensors", {"w": [1.0, 2.0]})
    (root / "models" / "a" / "config.json").write_text('{"model_type": "llama"}')
    recipe = root / "recipe.yaml"
    recipe.write_text("models:\n  - model: ./models/a\nmerge_method: passthrough\n")
    assert cli(["lock", str(recipe)]) == 0
    assert cli(["lock", str(recipe), "--check"]) == 0
    write_tiny_safetensors(root / "models" / "a" / "model.safetensors", {"w": [7.0, 8.0]})
    capsys.readouterr()
    assert cli(["lock", str(recipe), "--check"]) == 1
    assert "./models/a: content changed since it was locked" in capsys.readouterr().err


def test_task_folders_are_locked_and_fingerprinted(tmp_path: Path) -> None:
    """`include_path` (lm-eval task YAMLs and what lies beside them) is an input like data."""
    import yaml

    from lossless.engine.fingerprint import path_identity

    tasks = tmp_path / "my_tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: t\n")
    (tasks / "utils.py").write_text("A = 1\n")
    doc = yaml.safe_load(
        "eval:\n  e:\n    models: [org/a]\n    tasks: [t]\n    include_path: [./my_tasks, other]\n"
    )
    inputs = recipe_inputs(build_recipe(str(tmp_path / "r.yaml"), [doc]))
    assert [(i.path, i.ref, i.kind) for i in inputs[1:]] == [
        ((0, "eval", "e", "include_path", 0), "./my_tasks", "data"),
        ((0, "eval", "e", "include_path", 1), "other", "data"),
    ]
    before = lock_entries(inputs[1:2], tmp_path)
    assert before["./my_tasks"]["kind"] == "dir"
    identity = path_identity(tasks)
    (tasks / "utils.py").write_text("A = 2\n")  # same size, new code
    assert path_identity(tasks) != identity
    [change] = compare_lock(before, lock_entries(inputs[1:2], tmp_path))
    assert change.startswith("./my_tasks: content changed since it was locked")
