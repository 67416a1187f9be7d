"""`push_to_hub:` on a merge stage, an apply or a train step, against the fake hub: a run uploads
what `lossless push` would (model, card, recipe, lock); a new target pushes again without
rerunning anything; a failed gate pushes nothing unless --force-push; --no-push skips it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from lossless.cli import main as cli
from lossless.engine.context import RunOptions
from lossless.engine.runner import Runner
from lossless.engine.state import StateStore
from lossless.validation.recipe_check import check_text, load_recipe
from tests.factories import make_lora_adapter, make_model, write_jsonl
from tests.fake_hub import FakeHub, use_fake_hub

TEXT = [{"text": f"the quick brown fox {i} jumps over the lazy dog"} for i in range(4)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("push-to-hub-models")
    make_model(root / "base", seed=0)
    make_model(root / "ft", seed=1)
    make_lora_adapter(root / "ft", root / "lora", seed=2)
    return root


@pytest.fixture
def hub(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeHub()
    fake.add_commit("org/base", models / "base")
    with fake.serving():
        use_fake_hub(fake, monkeypatch, tmp_path / "hf")
        yield fake


def recipe_text(merged_repo: str, ceiling: float = 1000.0) -> str:
    return textwrap.dedent(
        f"""\
        apply:
          adapted:
            adapter: ./models/lora
            to: ./models/ft
            push_to_hub: {{repo: me/adapted, private: true}}
        models:
          - model: org/base
            parameters: {{weight: 0.5}}
          - model: adapted
            parameters: {{weight: 0.5}}
        merge_method: linear
        dtype: float32
        push_to_hub: {merged_repo}
        eval:
          forgetting:
            models: [org/base, merged]
            data: {{general: data/general.jsonl}}
            batch_size: 2
            gate: {{general: {{min_score: {ceiling}}}}}
        """
    )


def project(tmp_path: Path, models: Path, text: str) -> Path:
    for name in ("ft", "lora"):
        shutil.copytree(models / name, tmp_path / "models" / name)
    write_jsonl(tmp_path / "data" / "general.jsonl", TEXT)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    return recipe


def test_a_run_pushes_its_targets_and_a_new_target_reruns_nothing(
    hub: FakeHub, tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = project(tmp_path, models, recipe_text("me/merged"))
    assert cli(["run", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "pushed  merged → me/merged: " in err and "pushed  adapted → me/adapted: " in err

    merged = hub.files("me/merged")
    assert {"config.json", "README.md", "lossless.yaml", "lossless.lock"} <= set(merged)
    assert {"eval/forgetting/eval.json", "eval/forgetting/eval.png"} <= set(merged)
    assert any(name.endswith(".safetensors") for name in merged)
    assert merged["lossless.yaml"].decode() == recipe.read_text()
    assert merged["lossless.lock"].decode() == recipe.with_suffix(".lock").read_text()
    out = tmp_path / ".lossless" / "recipe" / "merged"
    assert merged["config.json"] == (out / "config.json").read_bytes()
    assert "me/merged" in merged["README.md"].decode()  # the card is written for its repo
    adapted = hub.files("me/adapted")  # the apply step was written out to be pushed
    assert "config.json" in adapted and any(n.endswith(".safetensors") for n in adapted)
    assert [c["visibility"] for c in hub.created] == ["private", "public"]  # run order

    # Another target: nothing reruns (push_to_hub is in no fingerprint), the new repo gets it.
    state = StateStore(tmp_path / ".lossless" / "recipe")
    before = {s: state.read(s) for s in ("adapted", "merged", "forgetting")}
    weights = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    recipe.write_text(recipe_text("{repo: me/merged-v2}"))
    assert cli(["run", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "merge merged: fresh, skipped" in err and "apply adapted: fresh, skipped" in err
    assert "(0 ran, 3 fresh)" in err
    assert {s: state.read(s) for s in before} == before
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")} == weights
    again = hub.files("me/merged-v2")
    assert again["lossless.yaml"].decode() == recipe.read_text()
    assert again["lossless.lock"].decode() == recipe.with_suffix(".lock").read_text()
    written = {"lossless.yaml", "lossless.lock", "README.md"}  # the recipe, its lock, the card
    assert {k: v for k, v in again.items() if k not in written} == {
        k: v for k, v in merged.items() if k not in written
    }

    # --no-push: the run, and no commit at all.
    commits = len(hub.commits_made)
    assert cli(["run", str(recipe), "--no-push"]) == 0
    assert len(hub.commits_made) == commits
    assert "share   lossless push" in capsys.readouterr().err


def test_a_failed_gate_pushes_nothing_unless_forced(
    hub: FakeHub, tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = project(tmp_path, models, recipe_text("me/merged", ceiling=0.001))
    assert cli(["run", str(recipe), "-q"]) == 1
    err = capsys.readouterr().err
    assert "gate failed:" in err and "min_score" in err
    assert "not pushed: me/adapted (adapted), me/merged (merged)" in err
    assert "lossless run --force-push pushes past a failed gate" in err
    assert hub.repos.keys() == {"org/base"}

    assert cli(["run", str(recipe), "-q", "--force-push"]) == 1  # still a failed run
    err = capsys.readouterr().err
    assert "pushed anyway (--force-push): me/adapted (adapted), me/merged (merged)" in err
    assert ("me/merged", "lossless push of merged (forced: 1 gate(s) failed)") in hub.commits_made
    assert "config.json" in hub.files("me/merged")


def test_push_to_hub_is_in_no_fingerprint(models: Path, tmp_path: Path) -> None:
    """Train, apply and merge steps: the same fingerprint with and without a target, and an
    apply step with a target is written out (a push needs files)."""
    (tmp_path / "models").mkdir()
    for name in ("base", "ft", "lora"):
        (tmp_path / "models" / name).symlink_to(models / name)
    write_jsonl(tmp_path / "data.jsonl", TEXT)

    def recipe(push: bool) -> Path:
        def key(repo: str) -> str:
            return f", push_to_hub: {repo}" if push else ""

        path = tmp_path / "r.yaml"
        path.write_text(
            textwrap.dedent(
                f"""\
                train:
                  skill: {{base: ./models/base, data: data.jsonl{key("me/skill")}}}
                apply:
                  adapted: {{adapter: ./models/lora, to: ./models/ft{key("me/adapted")}}}
                models: [{{model: adapted}}, {{model: ./models/base}}]
                merge_method: slerp
                base_model: ./models/base
                parameters: {{t: 0.5}}
                """
            )
            + ("push_to_hub: {repo: me/merged, private: true}\n" if push else "")
        )
        return path

    def fingerprints(path: Path) -> tuple[dict[str, str], Runner]:
        built, _ = load_recipe(path)
        runner = Runner(built, RunOptions(work_dir=tmp_path / "work"))
        return {s.name: runner.fingerprint(s).value for s in built.steps}, runner

    plain, runner = fingerprints(recipe(False))
    assert runner.status(runner.recipe.step("adapted")).state == "lazy"
    pushed, runner = fingerprints(recipe(True))
    assert pushed == plain
    assert set(runner.recipe.pushes) == {"skill", "adapted", "merged"}
    assert runner.status(runner.recipe.step("adapted")).state == "missing"  # to be written


def test_push_to_hub_problems_are_reported_with_their_lines() -> None:
    text = textwrap.dedent(
        """\
        train:
          a: {base: org/base, data: d.jsonl, push_to_hub: not a repo}
          b: {base: org/base, data: d.jsonl, push_to_hub: {repo: me/x}}
          c: {base: org/base, data: d.jsonl, push_to_hub: {repo: me/x, private: yes-please}}
        push_to_hub: me/y
        """
    )
    _, problems = check_text(text, "r.yaml")
    found = sorted((p.line, p.message) for p in problems if "push" in ".".join(map(str, p.path)))
    assert found == [
        (2, "`not a repo` is not a hub repo id"),
        (
            4,
            "`me/x` is pushed to twice (first on line 3): the two outputs would overwrite each other's files",
        ),
        (4, "wrong type: expected boolean"),  # at `private:`
        (
            5,
            "`push_to_hub` at the top of a document pushes its merge stage, and this document has none",
        ),
    ]


def test_a_recipe_from_a_model_repo_does_not_push_to_its_authors_repo(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    clone = tmp_path / "clone"  # a model repo as cloned: its recipe names the author's repo
    clone.mkdir()
    (clone / "lossless.yaml").write_text(
        "models:\n  - model: org/base\n    parameters: {weight: 1.0}\n"
        "merge_method: linear\ndtype: float32\npush_to_hub: author/model\n"
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["run", str(clone)]) == 0
    err = capsys.readouterr().err
    assert f"push_to_hub (author/model) is not used for a recipe from {clone}" in err
    assert "author/model" not in hub.repos
