"""Forgetting countermeasures: replay row counts, freeze keeps bytes, EWC penalty 0 → positive."""

from __future__ import annotations

from pathlib import Path

from lossless.recipe.build import build_train
from lossless.steps.train import run_train
from lossless.training.replay import replay_rows
from tests.factories import make_model, read_tensors, write_jsonl

NEW = [{"prompt": f"add {i} {i}:", "completion": f" {2 * i}"} for i in range(8)]
OLD = [{"text": f"the cat sat on mat {i}"} for i in range(5)]


def test_replay_draws_round_fraction_rows() -> None:
    old = [{"i": i} for i in range(10)]
    picked = replay_rows(old, n_train=8, fraction=0.25, seed=3)
    assert len(picked) == 2 and len({r["i"] for r in picked}) == 2
    assert picked == replay_rows(old, n_train=8, fraction=0.25, seed=3)  # seeded
    assert (
        len(replay_rows(old, n_train=40, fraction=0.5, seed=0)) == 20
    )  # beyond 10: with replacement


def test_replay_in_a_step_and_freeze_keeps_bytes(tmp_path: Path) -> None:
    import torch

    base = make_model(tmp_path / "base", layers=2)
    write_jsonl(tmp_path / "new.jsonl", NEW)
    write_jsonl(tmp_path / "old.jsonl", OLD)
    settings = {
        "data": "new.jsonl",
        "max_steps": 2,
        "learning_rate": 1e-2,
        "replay": {"data": "old.jsonl", "fraction": 0.5},
        "freeze": {"first_layers": 1, "patterns": ["embed_tokens"]},
    }
    m = run_train(
        build_train("t", {"method": "full", **settings}),
        base_dir=base,
        out_dir=tmp_path / "o",
        recipe_dir=tmp_path,
        quiet=True,
    )
    assert m["examples"] == 8 + 4
    before, after = read_tensors(base), read_tensors(tmp_path / "o")
    frozen = [n for n in before if ".layers.0." in n or "embed_tokens" in n]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(
        before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"]
    )


def test_ewc_penalty_zero_at_start_positive_after_steps(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from lossless.training.ewc import ewc_penalty, fisher_diagonal

    base = make_model(tmp_path / "base", layers=1)
    model = AutoModelForCausalLM.from_pretrained(base)
    x = torch.tensor([[5, 6, 7, 8]])
    fisher = fisher_diagonal(model, [{"input_ids": x, "labels": x}])
    assert all(f.min() >= 0 for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert float(ewc_penalty(model, fisher, anchor, 10.0)) == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
    # Closed form: λ/2 · Σ F·(θ−θ₀)².
    expected = 5.0 * sum(
        float((fisher[n] * (p - anchor[n]) ** 2).sum()) for n, p in model.named_parameters()
    )
    got = float(ewc_penalty(model, fisher, anchor, 10.0))
    assert got > 0 and abs(got - expected) < 1e-6 * max(expected, 1)


def test_ewc_in_a_lora_step(tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", layers=1)
    write_jsonl(tmp_path / "new.jsonl", NEW)
    write_jsonl(tmp_path / "old.jsonl", OLD)
    settings = {
        "data": "new.jsonl",
        "max_steps": 2,
        "ewc": {"data": "old.jsonl", "lambda": 100.0, "samples": 3},
    }
    m = run_train(
        build_train("t", {"method": "lora", **settings}),
        base_dir=base,
        out_dir=tmp_path / "o",
        recipe_dir=tmp_path,
        quiet=True,
    )
    assert m["steps"] == 2 and (tmp_path / "o" / "adapter_model.safetensors").exists()
    assert m["ewc_last_penalty"] > 0  # the LoRA matrices moved away from their start by step 2
