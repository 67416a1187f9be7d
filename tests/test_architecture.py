"""Layer-indexed names across families, and which tensors are embeddings, heads, or tied."""

from __future__ import annotations

import pytest

from lossless.merge import architecture as arch


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.3.self_attn.q_proj.weight", ("model.layers", 3, "self_attn.q_proj.weight")),
        ("transformer.h.11.attn.c_attn.bias", ("transformer.h", 11, "attn.c_attn.bias")),
        (
            "gpt_neox.layers.0.attention.dense.weight",
            ("gpt_neox.layers", 0, "attention.dense.weight"),
        ),
        ("model.decoder.layers.7.fc1.weight", ("model.decoder.layers", 7, "fc1.weight")),
        (
            "transformer.blocks.2.ffn.up_proj.weight",
            ("transformer.blocks", 2, "ffn.up_proj.weight"),
        ),
        # the first index is the layer; an expert index further on is part of the suffix
        ("model.layers.1.mlp.experts.5.w1.weight", ("model.layers", 1, "mlp.experts.5.w1.weight")),
        ("model.embed_tokens.weight", None),
        ("lm_head.weight", None),
        ("transformer.ln_f.weight", None),
    ],
)
def test_split_layer_name(name: str, expected: tuple[str, int, str] | None) -> None:
    assert arch.split_layer_name(name) == expected
    if expected:
        assert arch.layer_name(*expected) == name
        assert arch.layer_suffix(name) == expected[2]


def test_layer_prefix_is_the_biggest_block_container() -> None:
    names = [
        "vision_model.encoder.layers.0.mlp.weight",
        "model.layers.0.q.weight",
        "model.layers.0.k.weight",
        "model.layers.1.q.weight",
        "model.layers.1.k.weight",
        "model.norm.weight",
    ]
    prefix = arch.layer_prefix(names)
    assert prefix == "model.layers"
    assert arch.layer_tensors(names, prefix) == {
        0: ["model.layers.0.q.weight", "model.layers.0.k.weight"],
        1: ["model.layers.1.q.weight", "model.layers.1.k.weight"],
    }
    assert arch.non_layer_tensors(names, prefix) == [
        "vision_model.encoder.layers.0.mlp.weight",
        "model.norm.weight",
    ]


def test_pre_and_post_weights() -> None:
    pre = ["model.embed_tokens.weight", "transformer.wte.weight", "transformer.wpe.weight"]
    pre += ["gpt_neox.embed_in.weight", "transformer.word_embeddings.weight"]
    pre += ["model.decoder.embed_positions.weight", "transformer.word_embeddings_layernorm.bias"]
    post = ["model.norm.weight", "lm_head.weight", "transformer.ln_f.bias", "embed_out.weight"]
    assert all(arch.is_pre_weight(n) for n in pre)
    assert not any(arch.is_pre_weight(n) for n in post)


def test_layer_count_from_config_key_or_names() -> None:
    names = ["transformer.h.0.a", "transformer.h.1.a", "transformer.h.2.a"]
    assert arch.count_layers({"n_layer": 12}, names) == 12
    assert arch.layer_count_key({"n_layer": 12}) == "n_layer"
    assert arch.count_layers({}, names) == 3
    assert arch.layer_count_key({}) is None


def test_tied_heads() -> None:
    llama = ["model.embed_tokens.weight", "model.norm.weight"]
    assert arch.tied_embedding("lm_head.weight", llama) == "model.embed_tokens.weight"
    assert arch.tied_embedding("embed_out.weight", ["gpt_neox.embed_in.weight"]) == (
        "gpt_neox.embed_in.weight"
    )
    assert arch.tied_embedding("model.norm.weight", llama) is None
    assert arch.ties_embeddings({"tie_word_embeddings": True}, [*llama, "lm_head.weight"])
    assert not arch.ties_embeddings({"tie_word_embeddings": False}, llama)
    assert arch.ties_embeddings({}, llama)  # no key, no head: tied
    assert not arch.ties_embeddings({}, [*llama, "lm_head.weight"])


def test_family() -> None:
    config = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}
    assert arch.family(config) == ("qwen2", ("Qwen2ForCausalLM",))


def test_vocab_axis() -> None:
    for name in (
        "model.embed_tokens.weight",
        "lm_head.weight",
        "transformer.wte.weight",
        "embed_out.weight",
    ):
        assert arch.vocab_axis(name) == 0
    for name in (
        "transformer.wpe.weight",
        "model.norm.weight",
        "model.layers.0.mlp.up_proj.weight",
    ):
        assert arch.vocab_axis(name) is None
