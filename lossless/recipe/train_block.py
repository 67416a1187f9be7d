"""A `train:` block → typed `TrainSettings`, every default made explicit.

Split from `build.py` (which builds the recipe's steps) because a train block has the most
settings of any step; `build_train` there calls `build_train_settings` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossless.training.distributed import fsdp_options
from lossless.training.settings import (
    ADAPTER_LEARNING_RATE,
    FULL_LEARNING_RATE,
    DataSource,
    DistillSettings,
    EwcSettings,
    FreezeSettings,
    IA3Settings,
    InitSettings,
    InitTokenizer,
    LoraSettings,
    PrefixTuningSettings,
    PromptTuningSettings,
    QuantizationSettings,
    ReplaySettings,
    TrainSettings,
)

# Keys of a document that belong to lossless, not to the mergekit config of its merge stage.


def _strings(value: Any) -> str | tuple[str, ...] | None:
    """`all-linear` stays a string; a list of module names becomes a tuple."""
    return tuple(value) if isinstance(value, list) else value


def _data(value: Any) -> tuple[DataSource, ...]:
    """`data:` as a path, a list of paths (or of {path, weight, ...}), or one {path, ...}."""
    items = value if isinstance(value, list) else [value] if value else []
    return tuple(
        DataSource(
            item["path"],
            format=item.get("format"),
            split=item.get("split"),
            subset=item.get("subset"),
            revision=item.get("revision"),
            weight=float(item["weight"]) if item.get("weight") is not None else None,
        )
        if isinstance(item, Mapping)
        else DataSource(item)
        for item in items
    )


def _init(block: Mapping[str, Any] | None) -> InitSettings | None:
    if block is None:
        return None
    tokenizer = block.get("tokenizer")
    if isinstance(tokenizer, Mapping):
        files = tokenizer["train_on"]
        tokenizer = InitTokenizer(
            train_on=tuple(files) if isinstance(files, list) else (files,),
            vocab_size=int(tokenizer.get("vocab_size", 512)),
        )
    return InitSettings(config=str(block["config"]), tokenizer=tokenizer)


def _report_to(value: Any) -> tuple[str, ...]:
    """`report_to: tensorboard` or a list; `none` is the empty tuple."""
    names = [value] if isinstance(value, str) else list(value or ())
    return tuple(n for n in names if n != "none")


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def build_train_settings(block: Mapping[str, Any]) -> TrainSettings:
    """A checked `train:` block → TrainSettings, every default made explicit (see its fields)."""
    method = block.get("method", "lora")
    lora = block.get("lora") or {}
    quant = block.get("quantization") or {}
    prompt = block.get("prompt_tuning") or {}
    ia3 = block.get("ia3") or {}
    replay, ewc, freeze, distill = (block.get(k) for k in ("replay", "ewc", "freeze", "distill"))
    modules_to_save = lora.get("modules_to_save")
    return TrainSettings(
        method=method,
        data=_data(block.get("data")),
        format=block.get("format", "auto"),
        chat_template=block.get("chat_template"),
        init=_init(block.get("init")),
        lora=LoraSettings(
            r=int(lora.get("r", 8)),
            alpha=_whole_if_integral(lora.get("alpha", 16)),
            dropout=float(lora.get("dropout", 0.0)),
            target_modules=_strings(lora.get("target_modules")) or "all-linear",
            modules_to_save=tuple(modules_to_save) if modules_to_save is not None else None,
            use_rslora=bool(lora.get("use_rslora", False)),
            use_dora=bool(lora.get("use_dora", method == "dora")),
        ),
        quantization=QuantizationSettings(
            bits=int(quant.get("bits", 4)),
            quant_type=quant.get("quant_type", "nf4"),
            double_quant=bool(quant.get("double_quant", True)),
            compute_dtype=quant.get("compute_dtype"),
        ),
        prompt_tuning=PromptTuningSettings(
            num_virtual_tokens=int(prompt.get("num_virtual_tokens", 8)),
            init_text=prompt.get("init_text"),
        ),
        prefix_tuning=PrefixTuningSettings(
            num_virtual_tokens=int((block.get("prefix_tuning") or {}).get("num_virtual_tokens", 8))
        ),
        ia3=IA3Settings(
            target_modules=_strings(ia3.get("target_modules")),
            feedforward_modules=_strings(ia3.get("feedforward_modules")),
        ),
        epochs=float(block.get("epochs", 1)),
        max_steps=int(block.get("max_steps", -1)),
        learning_rate=float(
            block.get(
                "learning_rate", FULL_LEARNING_RATE if method == "full" else ADAPTER_LEARNING_RATE
            )
        ),
        lr_scheduler=str(block.get("lr_scheduler", "cosine")),
        warmup_ratio=block.get("warmup_ratio"),
        warmup_steps=block.get("warmup_steps"),
        batch_size=int(block.get("batch_size", 4)),
        gradient_accumulation_steps=int(block.get("gradient_accumulation_steps", 1)),
        max_seq_length=int(block.get("max_seq_length", 512)),
        gradient_checkpointing=bool(block.get("gradient_checkpointing", False)),
        precision=str(block.get("precision", "auto")),
        dtype=str(block.get("dtype", "auto")),
        attn_implementation=block.get("attn_implementation"),
        seed=int(block["seed"]) if block.get("seed") is not None else None,
        packing=bool(block.get("packing", False)),
        neftune_noise_alpha=_float_or_none(block.get("neftune_noise_alpha")),
        loss_on=block.get("loss_on"),
        save_steps=int(block.get("save_steps", 50)),
        logging_steps=int(block.get("logging_steps", 1)),
        save_total_limit=int(block.get("save_total_limit", 2)),
        weight_decay=float(block.get("weight_decay", 0.0)),
        optim=block.get("optim"),
        max_grad_norm=float(block.get("max_grad_norm", 1.0)),
        eval_split=_float_or_none(block.get("eval_split")),
        eval_steps=block.get("eval_steps"),
        report_to=_report_to(block.get("report_to")),
        trainer=tuple((block.get("trainer") or {}).items()),
        fsdp=fsdp_options(block.get("fsdp")),
        fsdp_config=tuple((block.get("fsdp_config") or {}).items()),
        deepspeed=block.get("deepspeed"),
        # An empty block (`replay: {}`) switches nothing on, as before typed settings.
        replay=ReplaySettings(_data(replay["data"]), float(replay.get("fraction", 0.1)))
        if replay
        else None,
        ewc=EwcSettings(
            _data(ewc["data"]), float(ewc.get("lambda", 1.0)), int(ewc.get("samples", 32))
        )
        if ewc
        else None,
        freeze=FreezeSettings(
            int(freeze.get("first_layers", 0)), tuple(freeze.get("patterns") or ())
        )
        if freeze
        else None,
        distill=DistillSettings(
            str(distill["model"]),
            float(distill.get("weight", 1.0)),
            float(distill.get("temperature", 2.0)),
        )
        if distill
        else None,
    )


def _whole_if_integral(value: float) -> int | float:
    """lora.alpha as written: 16 stays 16, 24.5 stays 24.5 (a cast to int changed the scale)."""
    number = float(value)
    return int(number) if number.is_integer() else number
