"""Vocabulary alignment: union tokenizer, permutations, stand-in rows (mergekit's rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lossless.errors import LosslessError
from lossless.merge.vocab import align_vocabularies, build_vocabulary, vocab_sizes
from lossless.tensors.checkpoint import Checkpoint
from lossless.tensors.safetensors_header import TORCH_TO_SAFETENSORS
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
        return TORCH_TO_SAFETENSORS[str(self._t[name].dtype).removeprefix("torch.")]

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]


EMBED = "model.embed_tokens.weight"


def permute_embeddings(
    vocab: Any, tensors: dict[str, torch.Tensor], base_key: str | None
) -> dict[str, torch.Tensor]:
    """Each model's `tensors` re-indexed whole, through the sources the merge reads."""
    sources = {key: DictSource(key, {EMBED: tensor}) for key, tensor in tensors.items()}
    aligned = align_vocabularies(vocab, sources, base_key)
    return {key: aligned[key].get(EMBED) for key in tensors}


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


def test_a_mean_stand_in_is_summed_model_by_model_in_the_tensors_dtype() -> None:
    """mergekit adds the holders' rows one by one in their dtype, then divides: in bf16,
    1 + 2⁻⁸ rounds back to 1, so the mean of (1, 2⁻⁸, 2⁻⁸) is bf16(1/3), not bf16(1.0078/3)."""
    from types import SimpleNamespace

    vocab = SimpleNamespace(
        tokenizer=SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1}),
        permutations={"base": [0, -1], "x": [0, 1], "y": [0, 1], "z": [0, 1]},
        size=2,
        tokens={},
    )
    small = 2.0**-8
    tensors = {
        key: torch.tensor([[0.0], [value]], dtype=torch.bfloat16)
        for key, value in (("base", 0.0), ("x", 1.0), ("y", small), ("z", small))
    }
    out = permute_embeddings(vocab, tensors, base_key="base")
    expected = torch.tensor([1.0 / 3], dtype=torch.bfloat16)
    assert torch.equal(out["base"][1], expected)
    assert float(expected) != float(torch.tensor((1 + 2 * small) / 3).to(torch.bfloat16))


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
    # The 64 padding rows hold the mean of the real rows (mergekit), summed in float64 and
    # rounded once to the tensor's dtype.
    embed = read_tensors(plain)["model.embed_tokens.weight"].to(torch.bfloat16)
    padded = permute_embeddings(vocab128, {"plain": embed}, base_key="plain")["plain"]
    tokens = len(vocab128.tokenizer.get_vocab())
    assert padded.shape == (384, 32) and padded.dtype == torch.bfloat16
    assert torch.equal(padded[:tokens], embed[:tokens])
    mean = (embed[:tokens].double().sum(dim=0) / tokens).to(torch.bfloat16)
    assert torch.equal(padded[tokens:], mean.expand(384 - tokens, -1))
    assert mean.abs().sum() > 0  # not the zeros it used to be


class SpyCheckpoint(Checkpoint):
    """A checkpoint that notes every whole read and every row range read."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.whole: list[str] = []
        self.spans: list[int] = []

    def get(self, name: str) -> torch.Tensor:
        self.whole.append(name)
        return super().get(name)

    def get_rows(self, name: str, lo: int, hi: int) -> torch.Tensor | None:
        self.spans.append(hi - lo)
        return super().get_rows(name, lo, hi)


def test_rows_are_read_by_blocks_and_equal_the_whole_tensor(
    two_models: tuple[Path, Path],
) -> None:
    """A block of re-indexed rows reads only its input rows (never an embedding whole), and
    blocks of any size put together are the whole re-indexed tensor, bit for bit."""
    plain, chat = two_models
    tokens = {"at": {"source": {"kind": "zero"}, "force": True}}
    vocab = build_vocabulary(
        "union",
        {"plain": plain, "chat": chat},
        {"plain": 320, "chat": 322},
        "plain",
        tokens=tokens,
        pad_to_multiple_of=64,
    )
    assert vocab.size == 384
    spies = {"plain": SpyCheckpoint(plain), "chat": SpyCheckpoint(chat)}
    aligned = align_vocabularies(vocab, spies, "plain")
    for name in (EMBED, "lm_head.weight"):
        whole = aligned["plain"].get(name)
        assert whole.shape == (384, 32)
        for step in (1, 7, 64, 384):
            rows = aligned["plain"].get_rows(name, 0, step)
            assert rows is not None
            parts = [
                aligned["plain"].get_rows(name, lo, min(384, lo + step))
                for lo in range(0, 384, step)
            ]
            assert torch.equal(torch.cat([p for p in parts if p is not None]), whole)
        # an independent check of three kinds of row: own, stand-in from chat, padding
        own, theirs = read_tensors(plain)[name], read_tensors(chat)[name]
        ids = vocab.tokenizer.get_vocab()
        end = ids["<|im_end|>"]
        assert torch.equal(whole[100], own[vocab.permutations["plain"][100]])
        assert torch.equal(whole[end], theirs[vocab.permutations["chat"][end]])
        assert torch.count_nonzero(whole[ids["at"]]) == 0
        mean = (whole[: len(ids)].double().sum(dim=0) / len(ids)).to(whole.dtype)
        assert torch.equal(whole[len(ids) :], mean.expand(384 - len(ids), -1))
    for spy in spies.values():
        assert spy.whole == []  # no embedding was ever read whole
        assert max(spy.spans) <= 322


def test_unknown_source_is_a_clear_error(two_models: tuple[Path, Path]) -> None:
    plain, _ = two_models
    with pytest.raises(LosslessError, match="not one of the merged models"):
        build_vocabulary("other", {"plain": plain}, {"plain": 320}, None)
