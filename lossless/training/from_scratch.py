"""`init:` — a model that starts from nothing: a tiny preset (or a config.json) with random
weights, and a byte-level BPE tokenizer trained on the recipe's text files.

Presets (hidden 64 so bitsandbytes' 64-element blocks fit; 4 heads of 16; 2 layers; vocab from
the tokenizer): tiny-llama, tiny-qwen2, tiny-mistral.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.training.settings import InitSettings, InitTokenizer

PRESETS: dict[str, dict[str, Any]] = {
    name: {
        "model_type": family,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
    }
    for name, family in (
        ("tiny-llama", "llama"),
        ("tiny-qwen2", "qwen2"),
        ("tiny-mistral", "mistral"),
    )
}
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(spec: str | InitTokenizer | None, recipe_dir: Path) -> Any:
    """A path/ref to an existing tokenizer, or {train_on: [files], vocab_size: N} → a new one."""
    from transformers import AutoTokenizer

    if isinstance(spec, str):
        local = recipe_dir / spec
        return AutoTokenizer.from_pretrained(str(local) if local.exists() else spec)
    if spec is None or not spec.train_on:
        raise LosslessError("init.tokenizer: expected a path or {train_on: [files], vocab_size: N}")
    return train_tokenizer([recipe_dir / f for f in spec.train_on], spec.vocab_size)


def _texts(paths: list[Path]) -> list[str]:
    """Every string value of every row (text, messages' contents, prompts...) as training text."""
    from lossless.training.datasets import load_rows

    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in paths:
        walk(load_rows(path))
    return out


def train_tokenizer(paths: list[Path], vocab_size: int) -> Any:
    """Byte-level BPE with <s> </s> <pad> and the ChatML tokens; its chat template is chatml."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lossless.merge.chat_templates import BUILTIN_TEMPLATES

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_texts(paths), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = BUILTIN_TEMPLATES["chatml"]
    return fast


def build_model(config_spec: str, tokenizer: Any, recipe_dir: Path, seed: int) -> Any:
    """A randomly initialised causal LM from a preset name or config.json, sized to the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if config_spec in PRESETS:
        kwargs = dict(PRESETS[config_spec])
    else:
        path = recipe_dir / config_spec
        if not path.is_file():
            raise LosslessError(
                f"init.config: {config_spec!r} is neither a preset nor a config.json file",
                hint=f"presets: {', '.join(PRESETS)}",
            )
        kwargs = json.loads(path.read_text())
    family = kwargs.pop("model_type", None)
    if not family:
        raise LosslessError(f"init.config: {config_spec}: missing 'model_type'")
    kwargs.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = AutoConfig.for_model(family, **kwargs)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def init_model(init: InitSettings, recipe_dir: Path, seed: int) -> tuple[Any, Any]:
    """(model, tokenizer) for a step's `init:` block."""
    tokenizer = build_tokenizer(init.tokenizer, recipe_dir)
    model = build_model(init.config, tokenizer, recipe_dir, seed)
    return model, _as_reloaded(model, tokenizer)


def _as_reloaded(model: Any, tokenizer: Any) -> Any:
    """The tokenizer as AutoTokenizer will load it next to this model. transformers 5 picks the
    tokenizer class from config.json's model_type (qwen2 → Qwen2Tokenizer, which adds
    <|endoftext|>), so the saved tokenizer can be one token longer than the trained one; we
    train with the reloaded one and grow the embeddings to match."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoTokenizer.from_pretrained(tmp)
    if len(reloaded) != model.config.vocab_size:
        model.resize_token_embeddings(len(reloaded))
    return reloaded
