"""A train step's settings as typed, frozen data: every key `schema/recipe.schema.json` allows in a
`train:` block, with the default the trainer uses when the key is absent.

Built once, with the recipe (`recipe/train_block.py: build_train_settings`), after the schema and the
semantic pass accepted the block; `steps/train.py` and `training/` read these fields and nothing
else. Torch-free: `lossless validate` builds them.

Switches (`replay`, `ewc`, `freeze`, `distill`) are None when the block leaves them out; the
method blocks (`lora`, `quantization`, ...) are always there, with their defaults, because the
method decides whether they are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PEFT_METHODS = ("lora", "dora", "qlora", "prompt_tuning", "prefix_tuning", "ia3")
METHODS = (*PEFT_METHODS, "full")

# Learning rates when the recipe names none: an adapter starts from zero and takes larger steps
# than a full fine-tune, whose every weight already holds what the model knows.
ADAPTER_LEARNING_RATE = 2e-4
FULL_LEARNING_RATE = 5e-5


@dataclass(frozen=True)
class DataSource:
    """One entry of `data:`: a recipe-relative file or dataset directory, or a hub dataset id
    (`teknium/OpenHermes-2.5`, `org/set@v1`, `hf://datasets/org/set`) with its split."""

    path: str
    format: str | None = None  # None: the step's `format` (auto-detected by default)
    split: str | None = None  # hub datasets and dataset directories; None: "train"
    subset: str | None = None  # a hub dataset's configuration (datasets' `name`), e.g. "main"
    revision: str | None = None  # a hub dataset's branch, tag or commit; None: main
    weight: float | None = None  # in a mixture (`training/mixing.py`): its share of the rows


Data = tuple[DataSource, ...]


def is_mixture(data: Data) -> bool:
    """Weighted entries are mixed by weight; plain ones are concatenated (validation allows
    only all or none weighted)."""
    return any(source.weight is not None for source in data)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int | float = 16  # peft's lora_alpha: the update is scaled by alpha / r
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"
    modules_to_save: tuple[str, ...] | None = None
    use_rslora: bool = False
    use_dora: bool = False  # true by default for method: dora


@dataclass(frozen=True)
class QuantizationSettings:
    """QLoRA's 4-bit base (bitsandbytes)."""

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str | None = None  # None: the step's load dtype (`dtype:`)


@dataclass(frozen=True)
class PromptTuningSettings:
    num_virtual_tokens: int = 8
    init_text: str | None = None  # None: random virtual tokens


@dataclass(frozen=True)
class PrefixTuningSettings:
    num_virtual_tokens: int = 8


@dataclass(frozen=True)
class IA3Settings:
    target_modules: str | tuple[str, ...] | None = None  # None: peft's per-architecture default
    feedforward_modules: str | tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReplaySettings:
    """Mix round(fraction × n_train) old rows into training (`training/replay.py`)."""

    data: Data
    fraction: float = 0.1


@dataclass(frozen=True)
class EwcSettings:
    """Elastic weight consolidation (`training/ewc.py`): Fisher from `samples` old examples."""

    data: Data
    lam: float = 1.0  # `lambda` in the recipe (a Python keyword)
    samples: int = 32


@dataclass(frozen=True)
class FreezeSettings:
    first_layers: int = 0
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class DistillSettings:
    """Learning without forgetting (`training/distill.py`): stay close to `model`'s next-token
    distributions on the replay rows (on every row when the step has no `replay:`)."""

    model: str  # a model reference, as written: a step name, a local dir, a hub id
    weight: float = 1.0
    temperature: float = 2.0


@dataclass(frozen=True)
class InitTokenizer:
    """`init.tokenizer: {train_on, vocab_size}`: a byte-level BPE trained on recipe files."""

    train_on: tuple[str, ...]
    vocab_size: int = 512


@dataclass(frozen=True)
class InitSettings:
    """`init:`: a model from nothing (`training/from_scratch.py`)."""

    config: str  # a preset name or a config.json path
    tokenizer: str | InitTokenizer | None = None  # a tokenizer reference, or one to train


@dataclass(frozen=True)
class TrainSettings:
    method: str = "lora"
    data: Data = ()  # empty only for an `init:` step that just saves its random model
    format: str = "auto"
    chat_template: str | None = None
    init: InitSettings | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    prompt_tuning: PromptTuningSettings = field(default_factory=PromptTuningSettings)
    prefix_tuning: PrefixTuningSettings = field(default_factory=PrefixTuningSettings)
    ia3: IA3Settings = field(default_factory=IA3Settings)
    epochs: float = 1.0
    max_steps: int = -1  # -1: run `epochs` epochs
    learning_rate: float = ADAPTER_LEARNING_RATE  # FULL_LEARNING_RATE for method: full
    lr_scheduler: str = "cosine"
    warmup_ratio: float | None = None
    warmup_steps: int | None = None  # wins over warmup_ratio when both are set
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 512
    gradient_checkpointing: bool = False
    precision: str = "auto"  # mixed precision: auto | fp32 | bf16 | fp16
    dtype: str = "auto"  # the weights' load dtype: auto | bfloat16 | float16 | float32
    attn_implementation: str | None = None  # None: transformers' default (sdpa where it can)
    seed: int | None = None  # None: the run's --seed (0 by default)
    packing: bool = False  # every format: labels travel with their tokens
    neftune_noise_alpha: float | None = None  # NEFTune: noise on the embeddings, e.g. 5
    loss_on: str | None = None  # None: "all" for text data, "answer" otherwise
    save_steps: int = 50
    logging_steps: int = 1
    save_total_limit: int = 2  # checkpoints kept while the step runs (deleted once it finished)
    weight_decay: float = 0.0
    optim: str | None = None  # None: transformers' default optimizer (adamw_torch)
    max_grad_norm: float = 1.0
    eval_split: float | None = None  # a held-out fraction of the examples, e.g. 0.1
    eval_steps: int | None = None  # None: evaluate at the end only
    report_to: tuple[str, ...] = ()  # tensorboard, wandb; () is none
    trainer: tuple[tuple[str, Any], ...] = ()  # `trainer:` passed through to SFTConfig, in order
    # Several processes (`lossless run --launcher`, training/distributed.py): FSDP's options
    # (None: no FSDP; (): `fsdp: true`) and config, or a DeepSpeed config file (recipe-relative).
    fsdp: tuple[str, ...] | None = None
    fsdp_config: tuple[tuple[str, Any], ...] = ()
    deepspeed: str | None = None
    replay: ReplaySettings | None = None
    ewc: EwcSettings | None = None
    freeze: FreezeSettings | None = None
    distill: DistillSettings | None = None

    @property
    def is_peft(self) -> bool:
        return self.method in PEFT_METHODS

    @property
    def warmup(self) -> float:
        """TrainingArguments' warmup_steps: a step count, or a ratio below 1 (transformers 5)."""
        if self.warmup_steps is not None:
            return float(self.warmup_steps)
        return float(self.warmup_ratio or 0)
