"""dtype / precision / attn_implementation: decided per machine without a GPU, shown in the log,
and the load dtype and attention kernel reach the trained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.recipe.build import build_train
from lossless.steps.train import run_train
from lossless.training.precision import Machine, decide
from tests.factories import make_model, write_jsonl

CPU = Machine(cuda=False, bf16_supported=False)
AMPERE = Machine(cuda=True, bf16_supported=True)
T4 = Machine(cuda=True, bf16_supported=False)


def test_auto_is_bf16_on_a_gpu_that_has_it_and_float32_elsewhere() -> None:
    gpu = decide("auto", "auto", None, None, AMPERE)
    assert (gpu.dtype, gpu.compute_dtype, gpu.bf16, gpu.fp16) == (
        "bfloat16",
        "bfloat16",
        True,
        False,
    )
    for on in (CPU, T4):
        p = decide("auto", "auto", None, None, on)
        assert (p.dtype, p.bf16) == ("float32", False)


def test_explicit_choices_and_qlora_compute_dtype() -> None:
    p = decide("float16", "auto", None, "eager", AMPERE)
    assert (p.dtype, p.bf16, p.attn_implementation) == ("float16", False, "eager")
    assert decide("float32", "bf16", "bf16", None, CPU).compute_dtype == "bfloat16"
    assert decide("bfloat16", "fp32", None, None, CPU).compute_dtype == "bfloat16"
    assert decide("auto", "auto", None, None, CPU).describe("auto") == (
        "dtype float32 (auto), mixed precision off, attention the model's default"
    )
    with pytest.raises(LosslessError, match="fp16 needs a CUDA GPU"):
        decide("auto", "fp16", None, None, CPU)


def test_load_dtype_and_attention_reach_the_model(tmp_path: Path, capsys) -> None:
    import json

    base = make_model(tmp_path / "base", layers=1)
    write_jsonl(tmp_path / "d.jsonl", [{"text": "a b c d"}] * 4)
    block = {"method": "full", "data": "d.jsonl", "max_steps": 1, "dtype": "bfloat16"}
    step = build_train("t", {**block, "attn_implementation": "eager"})
    run_train(step, base_dir=base, out_dir=tmp_path / "o", recipe_dir=tmp_path)
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert (
        "train t: dtype bfloat16, mixed precision off, attention eager" in capsys.readouterr().err
    )
