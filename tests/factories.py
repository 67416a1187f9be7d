"""Tiny synthetic models, tokenizers and adapters, built inside the test session (never downloaded).

Everything is seeded, so two calls with the same arguments give the same files. Models are saved
sharded (`max_shard_size`) when asked, to exercise the index path the hub's checkpoints use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = [
    "the cat sat on the mat",
    "the dog ate the bone",
    "one plus two is three",
    "reverse the words please",
    "hello world this is a tiny corpus for a tiny tokenizer",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>",
] * 4

FAMILIES = ("llama", "qwen2", "mistral")


def make_tokenizer(out_dir: str | Path, vocab_size: int = 320, chatml: bool = False) -> Path:
    """A byte-level BPE tokenizer trained on CORPUS, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if chatml:
        fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.save_pretrained(out)
    return out


def tiny_config(family: str = "llama", layers: int = 2, vocab_size: int = 320, **overrides: Any):
    """A transformers config of `family` with a few small layers."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return AutoConfig.for_model(family, **kwargs)


def make_model(
    out_dir: str | Path,
    family: str = "llama",
    layers: int = 2,
    seed: int = 0,
    dtype: str = "float32",
    shard_size: str | None = None,
    tokenizer: bool = True,
    vocab_size: int = 320,
    **config_overrides: Any,
) -> Path:
    """Save a randomly initialised model of `family` (and a tokenizer) to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    config = tiny_config(family, layers=layers, vocab_size=vocab_size, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Random init leaves norms at exactly 1 and biases at 0; perturb them so every tensor differs
    # between seeds and a merge that picks the wrong source is caught.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    model = model.to(getattr(torch, dtype))
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if shard_size:
        kwargs["max_shard_size"] = shard_size
    model.save_pretrained(out, **kwargs)
    if tokenizer:
        make_tokenizer(out, vocab_size=vocab_size)
    return out


def read_tensors(model_dir: str | Path) -> dict[str, Any]:
    """Every tensor of a saved model (sharded or not), loaded eagerly: for assertions only."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    tensors: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def make_lora_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    r: int = 4,
    alpha: int = 8,
    seed: int = 0,
    target_modules: Any = ("q_proj", "v_proj"),
    **lora_kwargs: Any,
) -> Path:
    """A PEFT LoRA adapter for `base_dir` with random, non-zero B (peft initialises B = 0)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), **lora_kwargs)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
