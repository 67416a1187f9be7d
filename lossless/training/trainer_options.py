"""`trainer:` — keys passed through to trl's SFTConfig, checked without importing torch.

`sft_config_fields.json` lists the installed SFTConfig's dataclass fields (refreshed, and kept
equal to the installed trl, by tests/test_training_options.py), so `lossless validate` reports an
unknown field with did-you-mean and its line:col while staying instant. Keys a named recipe key
already covers are refused (one way to say each thing), and so are the few the train step must
set itself for caching, resume and the replay marks to work.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

# SFTConfig field → the recipe key that sets it.
NAMED = {
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "learning_rate": "learning_rate",
    "lr_scheduler_type": "lr_scheduler",
    "warmup_steps": "warmup_steps",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_length": "max_seq_length",
    "gradient_checkpointing": "gradient_checkpointing",
    "activation_checkpointing": "gradient_checkpointing",
    "bf16": "precision",
    "fp16": "precision",
    "seed": "seed",
    "packing": "packing",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "neftune_noise_alpha": "neftune_noise_alpha",
    "weight_decay": "weight_decay",
    "optim": "optim",
    "max_grad_norm": "max_grad_norm",
    "eval_steps": "eval_steps",
    "report_to": "report_to",
    "completion_only_loss": "loss_on",
    "fsdp": "fsdp",
    "fsdp_config": "fsdp_config",
    "deepspeed": "deepspeed",
}
# Set by the train step itself: where checkpoints go (the partial dir, for resume), that the
# features arrive prepared, that the replay column survives, that the rich bar is the only one.
OWNED = (
    "output_dir",
    "dataset_kwargs",
    "remove_unused_columns",
    "disable_tqdm",
    "use_cpu",
    "eval_strategy",
    "resume_from_checkpoint",
)


@cache
def sft_fields() -> tuple[str, ...]:
    data = json.loads((Path(__file__).with_name("sft_config_fields.json")).read_text())
    return tuple(data["fields"])


def field_problem(key: str) -> tuple[str, str | None] | None:
    """(message, hint) when `trainer.<key>` cannot be passed through, else None."""
    from lossless.recipe.references import did_you_mean

    if key in NAMED:
        return f"`trainer.{key}` is set by the train step's own key", f"write `{NAMED[key]}:`"
    if key in OWNED:
        return f"`trainer.{key}` is set by lossless itself and cannot be overridden", None
    fields = sft_fields()
    if key not in fields:
        hint = did_you_mean(key, fields)
        return f"`{key}` is not a field of trl's SFTConfig", hint or "see trl's SFTConfig fields"
    return None
