"""Where the layers are in a checkpoint's tensor names, across model families, by pattern.

mergekit keeps one JSON file per architecture listing every weight. Here one regular expression
finds the repeated blocks instead, so any decoder family works without a table entry:
    model.layers.3.self_attn.q_proj.weight      (Llama, Qwen2, Mistral, Gemma, Phi-3 ...)
    transformer.h.3.attn.c_attn.weight          (GPT-2, GPT-J, Falcon's older names, BLOOM)
    gpt_neox.layers.3.attention.dense.weight    (GPT-NeoX, Pythia)
    model.decoder.layers.3.fc1.weight           (OPT)
    transformer.blocks.3.ffn.up_proj.weight     (MPT)
Everything else is a non-layer tensor: embeddings come before the layers ("pre"), the final norm
and the output head after them ("post"), which decides which slice they are taken from.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# The container of the repeated blocks is the first `<...>.layers|h|blocks|layer.<N>.` in a name.
_LAYER_RE = re.compile(
    r"^(?P<prefix>(?:[\w.]*?\.)?(?:layers|h|blocks|layer))\.(?P<index>\d+)\.(?P<rest>.+)$"
)

# Config keys that hold the layer count, in the order they are tried (GPT-2 uses n_layer).
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")

# Output heads that a checkpoint may omit when they share the input embedding's weights
# (`tie_word_embeddings`): head name → the embedding names it is tied to, per family.
TIED_HEADS: dict[str, tuple[str, ...]] = {
    "lm_head.weight": (
        "model.embed_tokens.weight",
        "transformer.wte.weight",
        "model.decoder.embed_tokens.weight",
        "transformer.word_embeddings.weight",
        "transformer.embd.wte.weight",
        "model.embed_in.weight",
    ),
    "embed_out.weight": ("gpt_neox.embed_in.weight",),
}

# Substrings of non-layer tensors that come before the first layer (token/position embeddings).
# embed_tokens, embed_in, embed_positions (OPT), word_embeddings(_layernorm) (BLOOM), wte/wpe (GPT-2)
_PRE_MARKERS = ("embed", "wte", "wpe")


def split_layer_name(name: str) -> tuple[str, int, str] | None:
    """`model.layers.3.mlp.up_proj.weight` → ("model.layers", 3, "mlp.up_proj.weight"); else None."""
    match = _LAYER_RE.match(name)
    if match is None:
        return None
    return match["prefix"], int(match["index"]), match["rest"]


def layer_suffix(name: str) -> str:
    """`model.layers.3.mlp.up_proj.weight` → "mlp.up_proj.weight" (the name must be a layer's)."""
    parts = split_layer_name(name)
    if parts is None:
        raise ValueError(f"{name} is not a layer tensor")
    return parts[2]


def layer_name(prefix: str, index: int, rest: str) -> str:
    """The inverse of `split_layer_name`."""
    return f"{prefix}.{index}.{rest}"


def layer_prefix(names: Iterable[str]) -> str | None:
    """The block container of a model: the prefix most layer-indexed names share.

    A vision tower's `vision_model.encoder.layers.N` loses to the decoder's `model.layers.N`
    because the decoder holds more tensors; its tensors are then treated as non-layer ones.
    """
    counts = Counter(parts[0] for name in names if (parts := split_layer_name(name)))
    return counts.most_common(1)[0][0] if counts else None


def layer_tensors(names: Iterable[str], prefix: str | None) -> dict[int, list[str]]:
    """Layer index → that layer's names, for names under `prefix` only, in checkpoint order."""
    layers: dict[int, list[str]] = {}
    for name in names:
        parts = split_layer_name(name)
        if parts and parts[0] == prefix:
            layers.setdefault(parts[1], []).append(name)
    return layers


def non_layer_tensors(names: Iterable[str], prefix: str | None) -> list[str]:
    """Names that are not in a block under `prefix`: embeddings, final norm, output head ..."""
    result = []
    for name in names:
        parts = split_layer_name(name)
        if not parts or parts[0] != prefix:
            result.append(name)
    return result


def is_pre_weight(name: str) -> bool:
    """True for tensors before the first layer (taken from the first slice's models)."""
    if name in TIED_HEADS:
        return False  # gpt_neox's `embed_out` is the output head, not an embedding
    return any(marker in name for marker in _PRE_MARKERS)


def vocab_axis(name: str) -> int | None:
    """0 for tensors with one row per token (embeddings, output heads), else None."""
    if name in TIED_HEADS or any(e == name for embeds in TIED_HEADS.values() for e in embeds):
        return 0
    return None


def count_layers(config: Mapping[str, Any], names: Iterable[str]) -> int:
    """The model's layer count: from its config when it says, else from its tensor names."""
    key = layer_count_key(config)
    if key is not None:
        return int(config[key])
    names = list(names)
    indices = layer_tensors(names, layer_prefix(names))
    return max(indices) + 1 if indices else 0


def layer_count_key(config: Mapping[str, Any]) -> str | None:
    """The config key to update with a new layer count (num_hidden_layers, or n_layer ...)."""
    for key in LAYER_COUNT_KEYS:
        if isinstance(config.get(key), int):
            return key
    return None


def family(config: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """What must agree between merged models: ("llama", ("LlamaForCausalLM",))."""
    return str(config.get("model_type", "?")), tuple(config.get("architectures") or ())


def tied_embedding(head: str, names: Iterable[str]) -> str | None:
    """The embedding a missing `head` is tied to in a model with these `names`, if any."""
    present = set(names)
    for candidate in TIED_HEADS.get(head, ()):
        if candidate in present:
            return candidate
    return None


def ties_embeddings(config: Mapping[str, Any], names: Iterable[str]) -> bool:
    """Whether a model's output head is its input embedding.

    `tie_word_embeddings` decides when the config states it; otherwise a checkpoint without any
    output head ties (transformers' own default for most families is True).
    """
    value = config.get("tie_word_embeddings")
    if isinstance(value, bool):
        return value
    present = set(names)
    return not any(head in present for head in TIED_HEADS)
