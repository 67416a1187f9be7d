"""The model a train step trains: the base in its load dtype or 4-bit (QLoRA), wrapped in the peft method's
adapter (LoRA/DoRA, prompt or prefix tuning, IA³). `method: full` trains the base unwrapped."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.training.precision import Precision
from lossless.training.settings import TrainSettings


def load_base(base_dir: Path, settings: TrainSettings, precision: Precision) -> Any:
    """The base model in `precision.dtype`, or bitsandbytes 4-bit for qlora."""
    import torch
    from transformers import AutoModelForCausalLM

    if settings.method == "qlora":
        return load_4bit(base_dir, settings, precision)
    return AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=getattr(torch, precision.dtype), **_attention(precision)
    )


def _attention(precision: Precision) -> dict[str, Any]:
    """attn_implementation only when the recipe names one: transformers picks sdpa otherwise."""
    if precision.attn_implementation is None:
        return {}
    return {"attn_implementation": precision.attn_implementation}


def load_4bit(base_dir: Path, settings: TrainSettings, precision: Precision) -> Any:
    """QLoRA base: bitsandbytes 4-bit weights (nf4 by default, double quantisation).

    bitsandbytes 0.50 runs 4-bit layers on CPU, but its CPU kernel needs every quantised
    Linear's in_features to be a multiple of the 64-element block (hidden 32 fails inside
    bnb with "shape '[32, 0]' is invalid"); we check that up front for a clear message."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    q = settings.quantization
    if q.bits != 4:
        raise LosslessError("qlora: only `quantization.bits: 4` is supported")
    config = AutoConfig.from_pretrained(base_dir)
    if not torch.cuda.is_available():
        sizes = [getattr(config, k, 64) for k in ("hidden_size", "intermediate_size")]
        if any(int(n) % 64 for n in sizes):
            raise LosslessError(
                f"qlora on CPU needs hidden_size and intermediate_size divisible by 64 (got {sizes})",
                hint="bitsandbytes' CPU 4-bit kernel quantises in blocks of 64; use method: lora",
            )
    dtype = getattr(torch, precision.compute_dtype)
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        base_dir,
        quantization_config=bnb,
        device_map=device,
        dtype=getattr(torch, precision.dtype),
        **_attention(precision),
    )
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=settings.gradient_checkpointing
    )


def wrap_peft(model: Any, settings: TrainSettings, base_dir: Path | None) -> Any:
    """The model wrapped in the method's adapter (peft's get_peft_model)."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        # peft asks transformers 5 for `is_gradient_checkpointing`, which warns of its rename
        # on every LoRA run; the warning is about peft's code, not the user's recipe.
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        return get_peft_model(model, peft_config(settings, base_dir))


def peft_config(settings: TrainSettings, base_dir: Path | None) -> Any:
    """peft config for the method: prompt/prefix tuning (virtual tokens), IA³, or LoRA/DoRA."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig

    method = settings.method
    if method == "prompt_tuning":
        pt = settings.prompt_tuning
        extra: dict[str, Any] = (
            {
                "prompt_tuning_init": "TEXT",
                "prompt_tuning_init_text": pt.init_text,
                "tokenizer_name_or_path": str(base_dir),
            }
            if pt.init_text
            else {}
        )
        return PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=pt.num_virtual_tokens, **extra
        )
    if method == "prefix_tuning":
        return PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=settings.prefix_tuning.num_virtual_tokens
        )
    if method == "ia3":
        ia = settings.ia3
        return IA3Config(
            task_type="CAUSAL_LM",
            target_modules=_names(ia.target_modules),
            feedforward_modules=_names(ia.feedforward_modules),
        )
    lora = settings.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; a float scales
        lora_dropout=lora.dropout,
        target_modules=_names(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) if lora.modules_to_save is not None else None,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        task_type="CAUSAL_LM",
    )


def _names(value: str | tuple[str, ...] | None) -> str | list[str] | None:
    """peft takes module names as a list (or `all-linear` as a string), as the recipe wrote them."""
    return list(value) if isinstance(value, tuple) else value
