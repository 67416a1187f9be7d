"""AdaptedSource as a TensorSource: delegation, identity of untouched tensors, dtype, weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossless.tensors.adapted import AdaptedSource
from lossless.tensors.adapters import load_adapter
from lossless.tensors.checkpoint import Checkpoint
from tests.factories import make_lora_adapter, make_model

Q0 = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapted")
    base = make_model(root / "base", seed=0, tokenizer=False)
    return {
        "base": base,
        "bf16": make_model(root / "bf16", seed=1, tokenizer=False, dtype="bfloat16"),
        "first": make_lora_adapter(base, root / "first", seed=1, target_modules=["q_proj"]),
        "second": make_lora_adapter(
            base, root / "second", seed=2, r=2, alpha=5, target_modules=["q_proj", "o_proj"]
        ),
        "dora": make_lora_adapter(
            base, root / "dora", seed=3, target_modules=["q_proj"], use_dora=True
        ),
    }


def lora_delta(adapter_dir: Path, module: str, scale: float) -> torch.Tensor:
    """s·B·A straight from the adapter file: the closed form the source must reproduce."""
    from safetensors.torch import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    key = f"base_model.model.{module}"
    return scale * tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]


def test_delegates_and_returns_untouched_tensors_as_is(files: dict[str, Path]) -> None:
    class Counting(Checkpoint):
        last: torch.Tensor | None = None

        def get(self, name: str) -> torch.Tensor:
            self.last = super().get(name)
            return self.last

    base = Counting(files["base"])
    source = AdaptedSource(base, [(load_adapter(files["first"]), 1.0)], label="adapted")
    assert source.label == "adapted"
    assert source.config == base.config and source.config["model_type"] == "llama"
    assert source.tensor_names() == base.tensor_names()
    assert source.shape(Q0) == (32, 32) and source.dtype(Q0) == "F32"
    assert source.path == files["base"]
    untouched = source.get("model.layers.0.mlp.up_proj.weight")
    assert untouched is base.last
    assert not torch.equal(source.get(Q0), base.get(Q0))


def test_two_adapters_with_weights_add_weighted_deltas(files: dict[str, Path]) -> None:
    base = Checkpoint(files["base"])
    first, second = load_adapter(files["first"]), load_adapter(files["second"])
    source = AdaptedSource(base, [(first, 0.5), (second, 2.0)], label="both")
    q0 = "model.layers.0.self_attn.q_proj"
    expected = (
        base.get(Q0)
        + 0.5 * lora_delta(files["first"], q0, 8 / 4)
        + 2.0 * lora_delta(files["second"], q0, 5 / 2)
    )
    torch.testing.assert_close(source.get(Q0), expected, atol=1e-6, rtol=1e-6)
    o1 = "model.layers.1.self_attn.o_proj"
    torch.testing.assert_close(
        source.get(f"{o1}.weight"),
        base.get(f"{o1}.weight") + 2.0 * lora_delta(files["second"], o1, 5 / 2),
        atol=1e-6,
        rtol=1e-6,
    )


def test_weighted_dora_scales_its_change_to_the_weight(files: dict[str, Path]) -> None:
    base = Checkpoint(files["base"])
    dora = load_adapter(files["dora"])
    full = AdaptedSource(base, [(dora, 1.0)], label="full").get(Q0)
    half = AdaptedSource(base, [(dora, 0.5)], label="half").get(Q0)
    torch.testing.assert_close(half, base.get(Q0) + 0.5 * (full - base.get(Q0)))


def test_bf16_target_computed_in_float32_and_cast_once(files: dict[str, Path]) -> None:
    target = Checkpoint(files["bf16"])
    source = AdaptedSource(target, [(load_adapter(files["first"]), 1.0)], label="bf16")
    got = source.get(Q0)
    assert got.dtype == torch.bfloat16 and source.dtype(Q0) == "BF16"
    exact = target.get(Q0).float() + lora_delta(
        files["first"], "model.layers.0.self_attn.q_proj", 2.0
    )
    assert torch.equal(got, exact.to(torch.bfloat16))


def test_written_out_equals_peft_merge_on_disk(files: dict[str, Path], tmp_path: Path) -> None:
    """`apply: {save: true}`: the lazy view written with the passthrough plan (steps/apply.py)
    loads in transformers with exactly peft's merged weights, on a model it was not trained on."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lossless.merge.output import build_output
    from lossless.steps.apply import copy_plan

    target = make_model(tmp_path / "instruct", seed=7)
    adapter = load_adapter(files["dora"])
    lazy = AdaptedSource(Checkpoint(target), [(adapter, 1.0)], label="adapted")
    out = build_output(
        copy_plan("adapted", lazy),
        {"adapted": lazy},
        tmp_path / "out",
        fingerprint="test",
        recipe_text="",
        tokenizer_dir=target,
        write_model_card=False,
        quiet=True,
    )
    written = AutoModelForCausalLM.from_pretrained(out).state_dict()
    model = AutoModelForCausalLM.from_pretrained(target)
    expected = PeftModel.from_pretrained(model, files["dora"]).merge_and_unload().state_dict()
    assert set(written) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(written[name], tensor, atol=2e-6, rtol=1e-5, msg=name)
