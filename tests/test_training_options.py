"""Trainer options: named keys (weight_decay, optim, max_grad_norm, eval split, schedulers) and
`trainer:` passed through to SFTConfig, its keys checked against the installed trl's fields."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lossless.recipe.build import build_train
from lossless.steps.train import SCHEDULERS, run_train
from lossless.training.trainer_options import NAMED, OWNED, sft_fields
from lossless.validation.recipe_check import check_text
from tests.factories import make_model, write_jsonl

FIELDS_FILE = Path(__file__).parents[1] / "lossless" / "training" / "sft_config_fields.json"


def test_field_list_equals_the_installed_sftconfig() -> None:
    """Refresh with LOSSLESS_UPDATE_GOLDEN=1 after upgrading trl."""
    import trl
    from trl import SFTConfig

    names = sorted(f.name for f in dataclasses.fields(SFTConfig) if f.init)
    names = [n for n in names if not n.startswith("_")]
    if os.environ.get("LOSSLESS_UPDATE_GOLDEN"):
        FIELDS_FILE.write_text(json.dumps({"trl": trl.__version__, "fields": names}, indent=0))
        sft_fields.cache_clear()
    assert list(sft_fields()) == names
    assert set(NAMED) | set(OWNED) <= set(names) | {"resume_from_checkpoint"}


def test_unknown_named_and_owned_trainer_keys_are_errors_with_line() -> None:
    text = (
        "train:\n  t:\n    base: org/m\n    data: d.jsonl\n"
        "    trainer: {adam_beta3: 0.9, learning_rate: 1, output_dir: x, adam_epsilon: 1e-6}\n"
    )
    _, problems = check_text(text, "r.yaml")
    by_message = {p.message: p for p in problems}
    beta = by_message["`adam_beta3` is not a field of trl's SFTConfig"]
    assert beta.line == 5 and "adam_beta2" in (beta.hint or "")
    assert by_message["`trainer.learning_rate` is set by the train step's own key"].hint == (
        "write `learning_rate:`"
    )
    assert "`trainer.output_dir` is set by lossless itself and cannot be overridden" in by_message
    assert len([p for p in problems if p.code == "trainer-field"]) == 3  # adam_epsilon is real


def test_named_options_eval_split_and_passthrough_reach_the_trainer(tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", layers=1)
    rows = [{"prompt": f"add {i} {i}:", "completion": f" {2 * i}"} for i in range(8)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    block = {
        "data": "d.jsonl",
        "max_steps": 2,
        "batch_size": 2,
        "weight_decay": 0.01,
        "optim": "sgd",
        "max_grad_norm": 0.5,
        "lr_scheduler": "cosine_with_restarts",
        "eval_split": 0.25,
        "eval_steps": 1,
        "save_total_limit": 1,
        "trainer": {"adam_beta2": 0.95, "lr_scheduler_kwargs": {"num_cycles": 2}},
    }
    m = run_train(
        build_train("t", block), base_dir=base, out_dir=tmp_path / "o", recipe_dir=tmp_path
    )
    assert m["examples"] == 6 and m["eval_examples"] == 2
    assert len(m["eval_losses"]) == 3 and m["eval_loss"] == m["eval_losses"][-1]  # 2 steps + end
    assert "cosine_with_restarts" in SCHEDULERS
