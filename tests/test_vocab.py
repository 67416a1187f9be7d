"""Vocabulary alignment: union tokenizer, permutations, stand-in rows (mergekit's rules)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossless.errors import LosslessError
from lossless.merge.vocab import (
    align_vocabularies,
    build_vocabulary,
    permute_embeddings,
    vocab_sizes,
)
from tests.factories import make_model, make_tokenizer, read_tensors

CHATML = "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\nsat<|im_end|>"


class DictSource:
    def __init__(self, label: str, tensors: dict[str, torch.Tensor]) -> None:
        self.label, self._t, self.config = label, tensors, {}

    def tensor_names(self) -> list[str]:
        return list(self._t)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._t[name].shape)

    def dtype(self, name: str) -> str:
        return "F32"

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vocab")
    plain = make_model(root / "plain", seed=1)
    chat = make_model(root / "chat", seed=2, tokenizer=False, vocab_size=322)
    make_tokenizer(chat, chatml=True)
    return plain, chat


def test_union_tokenizes_chatml_like_the_model_that_has_it(two_models: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    plain, chat = two_models
    vocab = build_vocabulary(
        "union", {"plain": plain, "chat": chat}, {"plain": 320, "chat": 322}, "plain"
    )
    assert vocab.size == 322
    chat_tok = AutoTokenizer.from_pretrained(chat)
    assert vocab.tokenizer(CHATML).input_ids == chat_tok(CHATML).input_ids
    # the chat tokens exist only in `chat`: the plain model has no row for them
    start = vocab.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert vocab.permutations["plain"][start] == -1
    assert vocab.permutations["chat"][start] == chat_tok.convert_tokens_to_ids("<|im_start|>")


def test_permuted_rows_and_stand_ins(two_models: tuple[Path, Path]) -> None:
    plain, chat = two_models
    vocab = build_vocabulary(
        "union", {"plain": plain, "chat": chat}, {"plain": 320, "chat": 322}, "plain"
    )
    name = "model.embed_tokens.weight"
    tensors = {"plain": read_tensors(plain)[name], "chat": read_tensors(chat)[name]}
    out = permute_embeddings(vocab, tensors, base_key="plain")
    ids = vocab.tokenizer.get_vocab()
    cat = 100  # an ordinary token both tokenizers learned from the same corpus
    # shared token: each model keeps its own row (the merge method combines them later)
    assert torch.equal(out["plain"][cat], tensors["plain"][vocab.permutations["plain"][cat]])
    assert torch.equal(out["chat"][cat], tensors["chat"][vocab.permutations["chat"][cat]])
    # a token only `chat` has: the plain model's stand-in is chat's own row
    end = ids["<|im_end|>"]
    assert torch.equal(out["plain"][end], tensors["chat"][vocab.permutations["chat"][end]])


def test_forced_zero_and_model_token_sources(two_models: tuple[Path, Path]) -> None:
    plain, chat = two_models
    tokens = {
        "at": {"source": {"kind": "zero"}, "force": True},
        "<|im_start|>": {"source": {"kind": "model_token", "model": "plain", "token": "<s>"}},
    }
    vocab = build_vocabulary(
        "union", {"plain": plain, "chat": chat}, {"plain": 320, "chat": 322}, "plain", tokens=tokens
    )
    name = "model.embed_tokens.weight"
    tensors = {"plain": read_tensors(plain)[name], "chat": read_tensors(chat)[name]}
    out = permute_embeddings(vocab, tensors, base_key="plain")
    ids = vocab.tokenizer.get_vocab()
    assert torch.count_nonzero(out["plain"][ids["at"]]) == 0
    assert torch.count_nonzero(out["chat"][ids["at"]]) == 0  # forced even where present
    start = ids["<|im_start|>"]
    assert torch.equal(out["plain"][start], tensors["plain"][ids["<s>"]])
    # chat has the token and it is not forced: its own row is kept
    assert torch.equal(out["chat"][start], tensors["chat"][vocab.permutations["chat"][start]])


def test_mean_when_several_but_not_base_have_a_token() -> None:
    from types import SimpleNamespace

    vocab = SimpleNamespace(
        tokenizer=SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1}),
        permutations={"base": [0, -1], "x": [0, 1], "y": [1, 0]},
        size=2,
        tokens={},
    )
    tensors = {
        "base": torch.tensor([[1.0, 1.0], [9.0, 9.0]]),
        "x": torch.tensor([[2.0, 2.0], [4.0, 6.0]]),
        "y": torch.tensor([[0.0, 2.0], [3.0, 3.0]]),
    }
    out = permute_embeddings(vocab, tensors, base_key="base")  # type: ignore[arg-type]
    # token "b" (id 1): base lacks it, x and y have it at rows 1 and 0 → mean of [4,6] and [0,2]
    assert torch.equal(out["base"][1], torch.tensor([2.0, 4.0]))
    assert torch.equal(out["x"][1], torch.tensor([4.0, 6.0]))


def test_padding_and_aligned_sources(two_models: tuple[Path, Path]) -> None:
    plain, chat = two_models
    vocab = build_vocabulary(
        "base",
        {"plain": plain, "chat": chat},
        {"plain": 320, "chat": 322},
        "plain",
        pad_to_multiple_of=64,
    )
    assert vocab.size == 320
    sources = {k: DictSource(k, read_tensors(p)) for k, p in (("plain", plain), ("chat", chat))}
    assert vocab_sizes(sources) == {"plain": 320, "chat": 322}
    aligned = align_vocabularies(vocab, sources, "plain")
    assert aligned["chat"].shape("model.embed_tokens.weight") == (320, 32)
    assert aligned["chat"].shape("lm_head.weight") == (320, 32)
    vocab128 = build_vocabulary(
        "union", {"plain": plain}, {"plain": 320}, None, pad_to_multiple_of=128
    )
    assert vocab128.size == 384
    # The 64 padding rows hold the mean of the real rows (mergekit), in the tensor's dtype.
    embed = read_tensors(plain)["model.embed_tokens.weight"].to(torch.bfloat16)
    padded = permute_embeddings(vocab128, {"plain": embed}, base_key="plain")["plain"]
    tokens = len(vocab128.tokenizer.get_vocab())
    assert padded.shape == (384, 32) and padded.dtype == torch.bfloat16
    assert torch.equal(padded[:tokens], embed[:tokens])
    mean = embed[:tokens].mean(dim=0)
    assert torch.equal(padded[tokens:], mean.expand(384 - tokens, -1))
    assert mean.abs().sum() > 0  # not the zeros it used to be


def test_unknown_source_is_a_clear_error(two_models: tuple[Path, Path]) -> None:
    plain, _ = two_models
    with pytest.raises(LosslessError, match="not one of the merged models"):
        build_vocabulary("other", {"plain": plain}, {"plain": 320}, None)
