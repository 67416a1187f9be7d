"""`lossless run` end to end on tiny checkpoints: merged files, loaded back and run by transformers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.factories import make_model, read_tensors


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lossless", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_model(root / "base", seed=0, shard_size="40KB")
    make_model(root / "ft1", seed=1)
    make_model(root / "ft2", seed=2, shard_size="40KB")
    return root


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_ties_merge_matches_closed_form_and_loads(family_models: Path, tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "ties.yaml",
        f"""
        models:
          - model: {family_models / "ft1"}
            parameters: {{weight: 1.0, density: 1.0}}
          - model: {family_models / "ft2"}
            parameters: {{weight: 1.0, density: 1.0}}
        merge_method: ties
        base_model: {family_models / "base"}
        parameters: {{normalize: true}}
        dtype: float32
        """,
    )
    out = tmp_path / "merged"
    result = run_cli("run", str(recipe), str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    merged = read_tensors(out)
    base, ft1, ft2 = (read_tensors(family_models / n) for n in ("base", "ft1", "ft2"))
    name = "model.layers.1.mlp.up_proj.weight"
    d1, d2 = ft1[name] - base[name], ft2[name] - base[name]
    # density 1: no trimming; sign election by the sign of the sum; disjoint mean of agreeing deltas
    sign = torch.sign(d1 + d2)
    agree1, agree2 = (torch.sign(d1) == sign).float(), (torch.sign(d2) == sign).float()
    expected = base[name] + (d1 * agree1 + d2 * agree2) / (agree1 + agree2).clamp(min=1)
    torch.testing.assert_close(merged[name], expected, rtol=1e-5, atol=1e-6)
    assert (out / "mergekit_config.yml").is_file()
    assert (out / "README.md").read_text().startswith("---")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = model(**tokenizer("the cat sat", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()


def test_second_run_is_fresh_and_weight_change_reruns(family_models: Path, tmp_path: Path) -> None:
    text = f"""
        models:
          - model: {family_models / "ft1"}
            parameters: {{weight: WEIGHT}}
          - model: {family_models / "ft2"}
            parameters: {{weight: 0.5}}
        merge_method: linear
        dtype: float32
        """
    recipe = write_recipe(tmp_path / "linear.yaml", text.replace("WEIGHT", "0.5"))
    out = tmp_path / "merged"
    assert run_cli("run", str(recipe), str(out)).returncode == 0
    manifest = json.loads((out / "lossless-manifest.json").read_text())
    again = run_cli("run", str(recipe), str(out))
    assert again.returncode == 0 and "fresh" in again.stderr
    assert json.loads((out / "lossless-manifest.json").read_text()) == manifest
    write_recipe(recipe, text.replace("WEIGHT", "1.5"))
    changed = run_cli("run", str(recipe), str(out))
    assert changed.returncode == 0 and "running" in changed.stderr
    merged = read_tensors(out)["model.norm.weight"]
    ft1, ft2 = (read_tensors(family_models / n)["model.norm.weight"] for n in ("ft1", "ft2"))
    torch.testing.assert_close(merged, (1.5 * ft1 + 0.5 * ft2) / 2.0)


def test_invalid_recipe_exits_2_without_traceback(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "bad.yaml", "merge_methd: ties\nmodels: []\n")
    result = run_cli("run", str(recipe), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "merge_method" in result.stderr  # did-you-mean
    assert not (tmp_path / "out").exists()


def test_run_writes_lock_and_locked_refuses_changed_input(
    family_models: Path, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / "ft"
    shutil.copytree(family_models / "ft1", model)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        f"""
        models:
          - model: {model}
            parameters: {{weight: 1.0}}
          - model: {family_models / "ft2"}
            parameters: {{weight: 1.0}}
        merge_method: linear
        """,
    )
    out = tmp_path / "merged"
    assert run_cli("run", str(recipe), str(out), "--quiet").returncode == 0
    lock = json.loads((tmp_path / "r.lock").read_text())
    assert str(model) in lock["inputs"]
    assert "## Lock" in (out / "README.md").read_text()
    assert run_cli("run", str(recipe), str(out), "--locked", "--quiet").returncode == 0
    config = json.loads((model / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (model / "config.json").write_text(json.dumps(config))
    refused = run_cli("run", str(recipe), str(out), "--locked", "--quiet")
    assert refused.returncode == 1
    assert "does not match" in refused.stderr and str(model) in refused.stderr


def test_recipe_output_may_not_escape_and_code_execution_needs_a_flag(
    family_models: Path, tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        f"""
        models:
          - model: {family_models / "ft1"}
            parameters: {{weight: 1.0}}
        merge_method: linear
        output: ../../somewhere-else
        """,
    )
    escaped = run_cli("run", str(recipe), "--quiet")
    assert escaped.returncode == 2  # the same rule as `validate`: an invalid recipe
    assert "output:" in escaped.stderr and "command line" in escaped.stderr
    assert not (tmp_path.parent.parent / "somewhere-else").exists()
    # the same path given on the command line is the user's choice
    chosen = tmp_path / "chosen"
    assert run_cli("run", str(recipe), str(chosen), "--quiet").returncode == 0

    hostile = write_recipe(
        tmp_path / "hostile.yaml",
        f"""
        models:
          - model: {family_models / "ft1"}
            parameters: {{weight: 1.0}}
        merge_method: linear
        trust_remote_code: true
        """,
    )
    refused = run_cli("validate", str(hostile))
    assert refused.returncode == 2
    assert "--trust-remote-code" in refused.stdout + refused.stderr


def test_modules_default_runs_with_mergekit_precedence(family_models: Path, tmp_path: Path) -> None:
    """`modules: {default: ...}` is the single module of a text model; its parameters sit
    between the model's own and the top level's (model > slice > module > top)."""
    recipe = write_recipe(
        tmp_path / "modules.yaml",
        f"""
        modules:
          default:
            models:
              - model: {family_models / "ft1"}
                parameters: {{weight: 0.2}}
              - model: {family_models / "ft2"}
            parameters: {{weight: 0.6}}
        merge_method: linear
        parameters: {{weight: 5.0, normalize: false}}
        dtype: float32
        """,
    )
    out = tmp_path / "merged"
    result = run_cli("run", str(recipe), str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    merged = read_tensors(out)
    ft1, ft2 = (read_tensors(family_models / n) for n in ("ft1", "ft2"))
    for name, value in merged.items():
        expected = 0.2 * ft1[name] + 0.6 * ft2[name]  # ft1 its own, ft2 the module's
        assert torch.allclose(value, expected, atol=1e-6), name


def test_multi_module_recipes_are_refused_with_the_line(
    family_models: Path, tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path / "vlm.yaml",
        f"""
        modules:
          text_decoder:
            models:
              - model: {family_models / "ft1"}
        merge_method: passthrough
        """,
    )
    result = run_cli("validate", str(recipe))
    assert result.returncode == 2
    assert "vlm.yaml:3:3  modules.text_decoder" in result.stdout
    assert "multi-module (vision-language) models are not supported yet" in result.stdout


def test_memory_flag_reaches_the_executor(family_models: Path, tmp_path: Path, monkeypatch) -> None:
    """`--memory` is a run option the merge executor receives (and a bad size is exit 2)."""
    from lossless import cli
    from lossless.merge import executor

    seen: list[int | None] = []
    real = executor.execute
    monkeypatch.setattr(
        executor, "execute", lambda *a, **k: seen.append(k.get("memory")) or real(*a, **k)
    )
    monkeypatch.setattr("lossless.merge.output.execute", executor.execute)
    recipe = write_recipe(
        tmp_path / "lin.yaml",
        f"""
        models:
          - model: {family_models / "ft1"}
            parameters: {{weight: 0.5}}
          - model: {family_models / "ft2"}
            parameters: {{weight: 0.5}}
        merge_method: linear
        """,
    )
    assert cli.main(["run", str(recipe), str(tmp_path / "out"), "-q", "--memory", "3G"]) == 0
    assert seen == [3 << 30]
    assert cli.main(["run", str(recipe), str(tmp_path / "o2"), "-q", "--memory", "lots"]) == 2
