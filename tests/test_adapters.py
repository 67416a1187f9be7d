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

from lossless.errors import LosslessError
from lossless.tensors.adapted import AdaptedSource
from lossless.tensors.adapters import check_fits, load_adapter
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


FAMILY_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # Qwen2 has q/k/v biases: `bias: lora_only` saves them whole, `lora_bias` adds s·lora_B.bias
    "qwen2_biases": (
        "qwen2",
        dict(target_modules=["q_proj", "v_proj"], bias="lora_only", lora_bias=True),
    ),
    "qwen2_bias_all": ("qwen2", dict(target_modules=["k_proj"], bias="all")),
    # GPT-2's Conv1D stores W as [in, out]: peft transposes B·A (fan_in_fan_out)
    "gpt2_fan_in_fan_out": ("gpt2", dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)),
    "gpt2_dora": ("gpt2", dict(target_modules=["c_attn"], fan_in_fan_out=True, use_dora=True)),
}


@pytest.mark.parametrize("variant", sorted(FAMILY_VARIANTS))
def test_other_families_equal_peft_merge(tmp_path: Path, variant: str) -> None:
    family, kwargs = FAMILY_VARIANTS[variant]
    base = make_model(tmp_path / "base", family=family, seed=0, tokenizer=False)
    target = make_model(tmp_path / "target", family=family, seed=1, tokenizer=False)
    adapter = make_lora_adapter(base, tmp_path / "adapter", seed=4, **kwargs)
    assert_same(lazy_applied(target, adapter), peft_merged(target, adapter))


def test_adapter_for_other_shapes_is_refused_naming_module_and_shapes(
    models: dict[str, Path], tmp_path: Path
) -> None:
    wide = make_model(tmp_path / "wide", seed=0, tokenizer=False, hidden_size=48)
    adapter = load_adapter(make_lora_adapter(wide, tmp_path / "adapter", target_modules=["q_proj"]))
    with pytest.raises(LosslessError) as caught:
        check_fits(adapter, Checkpoint(models["instruct"], label="instruct"))
    message = str(caught.value)
    assert "`model.layers.0.self_attn.q_proj.weight`" in message
    assert "adapter expects shape [48, 48], model has [32, 32]" in message
    assert "does not fit `instruct`" in message and "hint:" in message


def test_adapter_for_missing_module_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    deep = make_model(tmp_path / "deep", seed=0, layers=3, tokenizer=False)
    adapter = load_adapter(make_lora_adapter(deep, tmp_path / "adapter", target_modules=["v_proj"]))
    with pytest.raises(
        LosslessError, match=r"`model\.layers\.2\.self_attn\.v_proj\.weight` is not"
    ):
        check_fits(adapter, Checkpoint(models["base"]))


def test_missing_adapter_files_fail_clearly(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(LosslessError, match=r"adapter_config\.json is missing"):
        load_adapter(tmp_path / "nowhere")
    adapter = make_lora_adapter(models["base"], tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(LosslessError, match=r"adapter_model\.safetensors is missing"):
        load_adapter(adapter)


def test_pickled_adapter_needs_allow_pickle(models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    adapter = make_lora_adapter(models["base"], tmp_path / "adapter")
    pickled = Path(shutil.copytree(adapter, tmp_path / "pickled"))
    weights = pickled / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), pickled / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(LosslessError, match="--allow-pickle"):
        load_adapter(pickled)
    from_pickle = load_adapter(pickled, allow_pickle=True)
    source = AdaptedSource(Checkpoint(models["base"]), [(from_pickle, 1.0)], label="pickled")
    applied = {name: source.get(name) for name in source.tensor_names()}
    assert_same(applied, peft_merged(models["base"], adapter))


def test_non_lora_adapter_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models["base"])
    config = IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])
    get_peft_model(model, config).save_pretrained(tmp_path / "ia3")
    with pytest.raises(LosslessError, match="IA3 adapter cannot be applied"):
        load_adapter(tmp_path / "ia3")


def test_adapter_ranks_that_disagree_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    adapter = make_lora_adapter(models["base"], tmp_path / "adapter", target_modules=["q_proj"])
    weights = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in weights if k.endswith("lora_B.weight"))
    weights[key] = weights[key][:, :2].contiguous()  # B of rank 2, A of rank 4
    save_file(weights, adapter / "adapter_model.safetensors")
    with pytest.raises(LosslessError, match=r"lora_A of rank 4 \(\[4, 32\]\) but lora_B of rank 2"):
        load_adapter(adapter)


def test_non_finite_adapter_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    adapter = make_lora_adapter(models["base"], tmp_path / "adapter", target_modules=["q_proj"])
    weights = load_file(adapter / "adapter_model.safetensors")
    key = next(iter(weights))
    weights[key][0, 0] = float("nan")
    save_file(weights, adapter / "adapter_model.safetensors")
    with pytest.raises(LosslessError, match=r"non-finite(.|\n)*--allow-non-finite"):
        load_adapter(adapter)
    load_adapter(adapter, allow_non_finite=True)
