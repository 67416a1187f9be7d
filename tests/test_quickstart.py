"""The quickstart (the README's first command): its data script reproduces the committed files byte
for byte, and the recipe runs end to end through the CLI (each train step cut to a few steps), with
the eval table, the chart, the gate verdict and a merged model that transformers loads."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _make_data_module():
    spec = importlib.util.spec_from_file_location(
        "make_data", RECIPES / "quickstart" / "make_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_data_reproduces_the_committed_files(tmp_path: Path) -> None:
    _make_data_module().main(tmp_path)
    committed = sorted(p.name for p in (RECIPES / "quickstart" / "data").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (
            RECIPES / "quickstart" / "data" / name
        ).read_bytes(), name


def test_held_out_examples_never_appear_in_training() -> None:
    data = RECIPES / "quickstart" / "data"
    for skill in "abc":
        train = set((data / f"{skill}_train.jsonl").read_text().splitlines())
        held = (data / f"{skill}_heldout.jsonl").read_text().splitlines()
        assert held and not train.intersection(held), skill
    p_train = set((data / "p_train.txt").read_text().splitlines())
    assert not p_train.intersection((data / "p_heldout.txt").read_text().splitlines())


def test_quickstart_runs_end_to_end_with_short_training(tmp_path: Path) -> None:
    from lossless.cli import main

    shutil.copytree(RECIPES / "quickstart", tmp_path / "quickstart")
    recipe = yaml.safe_load((RECIPES / "quickstart.yaml").read_text())
    for step in recipe["train"].values():
        step["max_steps"] = 3  # the shape of the run, not its numbers
    # Three steps teach instruct nothing, so it may answer with nothing: keep those rows too.
    recipe["generate"]["rehearsal"]["length"] = {"min_chars": 0}
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    work = tmp_path / ".lossless"

    code = main(["run", str(path), "--work-dir", str(work), "--quiet"])

    results = json.loads((work / "forgetting" / "eval.json").read_text())
    models = recipe["eval"]["forgetting"]["models"]
    assert sorted(results["scores"]) == sorted(models)
    for model in models:
        scores = results["scores"][model]
        assert sorted(scores) == ["A", "B", "C", "P"]
        assert all(math.isfinite(scores[d]["loss"]) for d in scores)
        assert all(0.0 <= scores[d]["exact_match"] <= 1.0 for d in "ABC")
    assert (work / "forgetting" / "eval.png").stat().st_size > 0
    gate = json.loads((work / "gate" / "eval.json").read_text())["gates"]
    assert code == (0 if gate["passed"] else 1)  # a breached gate is exit 1, naming the breach
    assert gate["passed"] or gate["breaches"]
    # The gate guards every old skill and the new one.
    assert sorted(recipe["eval"]["gate"]["gate"]) == ["A", "B", "C", "P"]
    # No old training data: the rehearsal rows are instruct's own answers to prompts-only rows.
    rows = (work / "rehearsal" / "data.jsonl").read_text().splitlines()
    old = {
        line
        for name in ("a_train.jsonl", "b_train.jsonl")
        for line in (RECIPES / "quickstart" / "data" / name).read_text().splitlines()
    }
    assert 0 < len(rows) <= 450 and not old.intersection(rows)  # at most one per prompt
    metrics = json.loads((work / "new_skill" / "metrics.json").read_text())
    assert "distill_kl" in metrics

    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / recipe["output"]
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "next: 3 5 7"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    generated = model.generate(ids, min_new_tokens=2, max_new_tokens=2, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 2
