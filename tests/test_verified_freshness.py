"""Fresh means verified: a finished output with a shard missing, resized or (with --verify)
corrupted is stale, `plan` says why, and the rerun restores it byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.cli import main
from lossless.engine.runner import RunOptions, statuses
from lossless.validation.recipe_check import load_recipe
from tests.factories import make_model


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("verify")
    make_model(root / "a", seed=1)
    make_model(root / "b", seed=2)
    recipe = root / "r.yaml"
    recipe.write_text(
        f"models:\n  - model: {root / 'a'}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {root / 'b'}\n    parameters: {{weight: 0.5}}\n"
        "merge_method: linear\ndtype: float32\noutput: merged\n"
    )
    assert main(["run", str(recipe), "--quiet", "--out-shard-size", "20K"]) == 0
    out = root / "merged"
    return recipe, out, {p.name: p.read_bytes() for p in out.iterdir()}


def said(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def shards(out: Path) -> list[Path]:
    return sorted(out.glob("model-*.safetensors"))


def test_missing_shard_makes_the_step_stale_and_plan_says_why(
    merged: tuple[Path, Path, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, out, original = merged
    assert len(shards(out)) >= 2
    victim = shards(out)[1]
    victim.unlink()
    # what `plan` shows (its rows come from `statuses`; the shard size is a run option)
    recipe_model, _ = load_recipe(recipe)
    (status,) = statuses(recipe_model, RunOptions(shard_size=20_000))
    assert (status.state, status.reasons) == ("stale", [f"output shard {victim.name} missing"])
    assert main(["plan", str(recipe), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"][0]["state"] == "stale"
    assert main(["run", str(recipe), "--out-shard-size", "20K"]) == 0
    assert f"running (output shard {victim.name} missing)" in said(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == original


def test_truncated_shard_is_caught_by_size_and_corruption_by_verify(
    merged: tuple[Path, Path, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, out, original = merged
    victim = shards(out)[0]
    victim.write_bytes(original[victim.name][:-10])
    assert main(["run", str(recipe), "--out-shard-size", "20K"]) == 0
    assert f"{victim.name} is" in said(capsys)
    assert victim.read_bytes() == original[victim.name]

    flipped = bytearray(original[victim.name])
    flipped[-1] ^= 0xFF  # same size, different bytes: only the sha256 can tell
    victim.write_bytes(bytes(flipped))
    assert main(["run", str(recipe), "--out-shard-size", "20K"]) == 0
    assert "fresh, skipped" in said(capsys)
    assert main(["run", str(recipe), "--out-shard-size", "20K", "--verify"]) == 0
    assert "does not match its recorded sha256" in said(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == original


def test_a_rebuilt_dependency_makes_its_readers_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Freshness follows what a dependency actually wrote, not only its fingerprint: a stage
    rebuilt into different bytes under the same fingerprint (`--force` of a nondeterministic
    step) reruns the stages that read it; a rebuild into the same bytes reruns nothing."""
    make_model(tmp_path / "a", seed=1)
    make_model(tmp_path / "b", seed=2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: first\nmodels:\n  - model: {tmp_path / 'a'}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {tmp_path / 'b'}\n    parameters: {{weight: 0.5}}\n"
        "merge_method: linear\ndtype: float32\n---\n"
        f"name: final\nmodels:\n  - model: first\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {tmp_path / 'a'}\n    parameters: {{weight: 0.5}}\n"
        "merge_method: linear\ndtype: float32\noutput: out\n"
    )
    assert main(["run", str(recipe), "--quiet"]) == 0
    state = tmp_path / ".lossless" / "r" / ".state"
    first = json.loads((state / "first.json").read_text())
    final = json.loads((state / "final.json").read_text())
    assert final["inputs_made"] == {"first": first["made"]} and first["made"]

    # a deterministic rebuild writes the same bytes: the reader stays fresh
    assert main(["run", str(recipe), "--force", "first"]) == 0
    text = said(capsys)
    assert "first: running (forced)" in text and "final: fresh, skipped" in text

    # a rebuild that wrote other bytes (recorded as a new `made`): the reader reruns, and says why
    first["made"] = "0" * 64
    (state / "first.json").write_text(json.dumps(first))
    recipe_model, _ = load_recipe(recipe)
    reasons = {s.name: (s.state, s.reasons) for s in statuses(recipe_model, RunOptions())}
    assert reasons == {
        "first": ("fresh", []),
        "final": ("stale", ["step:first: rebuilt since final read it"]),
    }
    assert main(["run", str(recipe)]) == 0
    assert "final: running (step:first: rebuilt since final read it)" in said(capsys)
    assert json.loads((state / "final.json").read_text())["inputs_made"] == {"first": "0" * 64}
