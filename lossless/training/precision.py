"""A train step's load dtype (`dtype:`), attention kernel (`attn_implementation:`) and
mixed-precision mode (`precision:`), decided once and shown in the step's log.

Pure decisions over what the machine has (`cuda`, `bf16_supported`), so they are tested without
a GPU; `machine()` asks torch. `dtype: auto` loads bf16 on a GPU that has it and float32 on CPU
(CPU bf16 matmuls are slower than fp32 and lose precision); QLoRA's compute dtype follows the
load dtype unless `quantization.compute_dtype` names one.
"""

from __future__ import annotations

from dataclasses import dataclass

from lossless.errors import LosslessError

DTYPES = ("auto", "bfloat16", "float16", "float32")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Machine:
    cuda: bool
    bf16_supported: bool


@dataclass(frozen=True)
class Precision:
    """What a train step runs with, e.g. Precision("bfloat16", "bfloat16", True, False, "sdpa")."""

    dtype: str  # torch dtype name the weights are loaded in
    compute_dtype: str  # QLoRA's bnb_4bit_compute_dtype
    bf16: bool  # mixed precision (TrainingArguments' bf16 / fp16)
    fp16: bool
    attn_implementation: str | None  # None: transformers' default for the model

    def describe(self, requested: str) -> str:
        """One log line, e.g. `dtype float32 (auto: no GPU), mixed precision off, attention sdpa`."""
        how = f" ({requested})" if requested == "auto" else ""
        amp = "bf16" if self.bf16 else "fp16" if self.fp16 else "off"
        attn = self.attn_implementation or "the model's default"
        return f"dtype {self.dtype}{how}, mixed precision {amp}, attention {attn}"


def machine() -> Machine:
    import torch

    cuda = torch.cuda.is_available()
    return Machine(cuda=cuda, bf16_supported=cuda and torch.cuda.is_bf16_supported())


def decide(
    dtype: str,
    precision: str,
    compute_dtype: str | None,
    attn_implementation: str | None,
    on: Machine,
) -> Precision:
    """The load dtype, mixed precision and QLoRA compute dtype for these settings on `on`."""
    if dtype not in DTYPES:
        raise LosslessError(f"train: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if precision not in PRECISIONS:
        raise LosslessError(f"train: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and not on.cuda:
        raise LosslessError(
            "train: precision fp16 needs a CUDA GPU", hint="use auto or fp32 on CPU"
        )
    auto = "bfloat16" if on.bf16_supported else "float32"
    loaded = auto if dtype == "auto" else dtype
    # Mixed precision: asked for, or `auto` where the GPU has bf16. Weights loaded in float16
    # cannot be trained under autocast's grad scaler, so auto leaves it off for them.
    bf16 = precision == "bf16" or (
        precision == "auto" and on.bf16_supported and loaded != "float16"
    )
    return Precision(
        dtype=loaded,
        compute_dtype=_torch_name(compute_dtype) if compute_dtype else loaded,
        bf16=bf16,
        fp16=precision == "fp16",
        attn_implementation=attn_implementation,
    )


def _torch_name(name: str) -> str:
    """bf16 / fp16 / fp32 (older recipes) → torch's names."""
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name)
