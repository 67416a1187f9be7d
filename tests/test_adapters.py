"""Lazy LoRA application equals peft's own merge, tensor for tensor, on real adapter files.

Every adapter has random non-zero B (tests/factories.py), so a no-op apply would fail.
The comparison is `PeftModel.from_pretrained(model, adapter).merge_and_unload()`, which is what
mergekit's `model+lora` and every "merge the adapter" script do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lossless.adapters import check_fits, load_adapter
from lossless.tensors.adapted import AdaptedSource
from lossless.tensors.checkpoint import Checkpoint
from tests.factories import make_lora_adapter, make_model, read_tensors


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "base": make_model(root / "base", seed=0, tokenizer=False),
        # an "instruct" model: same shapes, different weights
        "instruct": make_model(root / "instruct", seed=1, tokenizer=False),
    }


def peft_merged(model_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return {k: v.detach() for k, v in merged.state_dict().items()}


def lazy_applied(model_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    base = Checkpoint(model_dir)
    adapter = load_adapter(adapter_dir)
    check_fits(adapter, base)
    source = AdaptedSource(base, [(adapter, 1.0)], label="adapted")
    return {name: source.get(name) for name in source.tensor_names()}


def assert_same(lazy: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(lazy) == set(expected)
    for name, tensor in expected.items():
        assert lazy[name].dtype == tensor.dtype, name
        torch.testing.assert_close(lazy[name], tensor, atol=2e-6, rtol=1e-5, msg=name)


VARIANTS: dict[str, dict[str, Any]] = {
    "lora": dict(target_modules=["q_proj", "v_proj", "down_proj"]),
    "rslora": dict(target_modules=["q_proj", "o_proj"], use_rslora=True),
    "dora": dict(target_modules=["q_proj", "up_proj"], use_dora=True),
    "embedding": dict(target_modules=["embed_tokens", "k_proj"]),
    "embedding_dora": dict(target_modules=["embed_tokens"], use_dora=True),
    "modules_to_save": dict(target_modules=["q_proj"], modules_to_save=["lm_head"]),
    "patterns": dict(
        target_modules=["q_proj", "v_proj"],
        rank_pattern={"v_proj": 2},
        alpha_pattern={r"layers\.1\.self_attn\.q_proj": 3},
    ),
    "every_linear": dict(
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        r=2,
        alpha=16,
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("target", ["base", "instruct"])
def test_lazy_apply_equals_peft_merge(
    models: dict[str, Path], tmp_path: Path, variant: str, target: str
) -> None:
    adapter = make_lora_adapter(models["base"], tmp_path / "adapter", seed=3, **VARIANTS[variant])
    lazy = lazy_applied(models[target], adapter)
    expected = peft_merged(models[target], adapter)
    assert_same(lazy, expected)
    # the adapter really changed something, and left the rest alone
    before = read_tensors(models[target])
    changed = {n for n in before if not torch.equal(before[n], lazy[n])}
    assert changed
    assert "model.norm.weight" not in changed
