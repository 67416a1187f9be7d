"""prompt_tuning / prefix_tuning / ia3 train a few steps and write adapters PeftModel loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.recipe.build import build_train
from lossless.steps.train import run_train
from tests.factories import make_model, write_jsonl

ROWS = [{"prompt": f"add {i} {i}:", "completion": f" {2 * i}"} for i in range(8)]


@pytest.mark.parametrize(
    ("method", "block"),
    [
        (
            "prompt_tuning",
            {"prompt_tuning": {"num_virtual_tokens": 4, "init_text": "add the numbers"}},
        ),
        ("prefix_tuning", {"prefix_tuning": {"num_virtual_tokens": 4}}),
        (
            "ia3",
            {
                "ia3": {
                    "target_modules": ["k_proj", "v_proj", "down_proj"],
                    "feedforward_modules": ["down_proj"],
                }
            },
        ),
    ],
)
def test_peft_method_adapter_loads(tmp_path: Path, method: str, block: dict) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = make_model(tmp_path / "base", layers=1)
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    settings = {"data": "d.jsonl", "max_steps": 3, "learning_rate": 1e-2, **block}
    m = run_train(
        build_train("t", {"method": method, **settings}),
        base_dir=base,
        out_dir=tmp_path / "o",
        recipe_dir=tmp_path,
        quiet=True,
    )
    assert m["steps"] == 3 and m["trainable_params"] > 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "o")
    assert model.peft_config["default"].peft_type.value.lower().replace("_", "") == method.replace(
        "_", ""
    )
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.isfinite().all()
