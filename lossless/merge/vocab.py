"""Inputs whose vocabularies differ: build the output tokenizer and line up embedding rows.

mergekit semantics (`tokenizer_source: base | union | <model>` and the `tokenizer:` block):
- the output vocabulary is the base's, a named model's, or the union of all (the base's tokens
  keep their ids; tokens only other models have are appended as added tokens);
- every input's embedding and lm_head rows are permuted into the output's ids *before* the merge
  method runs, so the merged row of a shared token is the merge of the inputs' rows;
- a token an input lacks gets a stand-in row: the one set in `tokenizer.tokens`, else the base's
  row if the base has the token, else the row of the only model that has it, else the mean of the
  models that have it (zero if none). `force: true` uses the stand-in even for inputs that have it.
- rows added by `pad_to_multiple_of` (past the vocabulary) hold the mean of the model's token rows.

The permutation is computed once from tokenizer files; the rows are gathered a block at a time
when the executor asks for them, through `PermutedSource` (merge/vocab_rows.py).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.tensors.source import TensorSource

# Tensors whose first dimension is indexed by token id, by the names families use.
EMBEDDING_SUFFIXES = (
    "embed_tokens.weight",
    "lm_head.weight",
    "wte.weight",
    "embed_in.weight",
    "embed_out.weight",
    "word_embeddings.weight",
)


def is_embedding(name: str) -> bool:
    return name.endswith(EMBEDDING_SUFFIXES)


@dataclass
class Vocabulary:
    """The output tokenizer and, per input model key, output token id → input row (-1 = none)."""

    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    permutations: dict[str, list[int]]
    original_vocabs: dict[str, dict[str, int]]
    size: int  # rows of the output embedding (padded to `pad_to_multiple_of`)
    tokens: Mapping[str, Any] = field(default_factory=dict)  # the `tokenizer.tokens` block

    def save(self, out_dir: Path) -> Path:
        self.tokenizer.save_pretrained(out_dir)
        return out_dir


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    except Exception as error:  # transformers raises many kinds for a missing/odd tokenizer
        raise LosslessError(
            f"cannot load the tokenizer of {path}: {error}",
            hint="tokenizer_source needs a tokenizer (tokenizer.json or tokenizer files) in every input",
        ) from error


def _copy(tokenizer: Any) -> Any:
    """A fresh copy: adding tokens to the base's tokenizer object must not change it."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp, use_fast=True)


def _model_vocab(tokenizer: Any, rows: int) -> dict[str, int]:
    """Token → id, without ids past the model's embedding rows (padding tokens)."""
    return {tok: idx for tok, idx in tokenizer.get_vocab().items() if idx < rows}


def _union(base: Any, others: Sequence[Any], rows: Sequence[int]) -> Any:
    """The base's tokenizer plus every token another model has and it lacks."""
    from tokenizers import AddedToken

    result = _copy(base)
    known = set(result.get_vocab())
    for tokenizer, limit in zip(others, rows, strict=True):
        added = {
            info.content: info
            for idx, info in tokenizer.added_tokens_decoder.items()
            if idx < limit
        }
        plain = [
            t
            for t, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
            if i < limit and t not in added and t not in known
        ]
        if plain:
            result.add_tokens(plain)
            known.update(plain)
        for content, info in added.items():
            if content not in known:
                token = AddedToken(
                    content,
                    single_word=info.single_word,
                    lstrip=info.lstrip,
                    rstrip=info.rstrip,
                    normalized=info.normalized,
                    special=info.special,
                )
                result.add_tokens([token], special_tokens=info.special)
                known.add(content)
    return result


def build_vocabulary(
    source: str,
    tokenizer_dirs: Mapping[str, Path],
    embedding_rows: Mapping[str, int],
    base_key: str | None,
    *,
    tokens: Mapping[str, Any] | None = None,
    pad_to_multiple_of: int | None = None,
) -> Vocabulary:
    """`source` is "base", "union" or a model key of `tokenizer_dirs` (mergekit's tokenizer_source).

    `embedding_rows[key]` is the number of rows of that model's embedding matrix (ids past it are
    padding and are ignored, as mergekit does).
    """
    keys = list(tokenizer_dirs)
    base_key = base_key or keys[0]
    loaded = {key: _load_tokenizer(path) for key, path in tokenizer_dirs.items()}
    if source == "base":
        out = loaded[base_key]
    elif source == "union":
        others = [k for k in keys if k != base_key]
        out = _union(
            loaded[base_key], [loaded[k] for k in others], [embedding_rows[k] for k in others]
        )
    elif source in loaded:
        out = loaded[source]
    else:
        raise LosslessError(
            f"tokenizer source `{source}` is not one of the merged models",
            hint=f"use base, union, or one of: {', '.join(keys)}",
        )
    tokens = dict(tokens or {})
    new_tokens = [t for t in tokens if t not in out.get_vocab()]
    if new_tokens:
        out = _copy(out)
        out.add_tokens(new_tokens)
    vocab = out.get_vocab()
    size = max(vocab.values()) + 1
    if pad_to_multiple_of:
        size = math.ceil(size / pad_to_multiple_of) * pad_to_multiple_of
    originals = {k: _model_vocab(loaded[k], embedding_rows[k]) for k in keys}
    permutations: dict[str, list[int]] = {}
    for key in keys:
        original = originals[key]
        mapping = [-1] * size
        for token, new_id in vocab.items():
            mapping[new_id] = original.get(token, -1)
        permutations[key] = mapping
    return Vocabulary(out, permutations, originals, size, tokens)


def token_row_source(
    spec: Any, key_of: Mapping[str, str], vocab: Vocabulary, token: str
) -> tuple[str, int] | None:
    """A `tokenizer.tokens` entry → (model key, input row), or None for a zero row."""
    source = spec.get("source") if isinstance(spec, Mapping) else spec
    if isinstance(source, Mapping) and source.get("kind") == "zero":
        return None
    if isinstance(source, Mapping) and source.get("kind") == "model_token":
        key = key_of.get(str(source.get("model")), str(source.get("model")))
        if key not in vocab.permutations:
            raise LosslessError(
                f"tokenizer.tokens.{token}: model `{source.get('model')}` is not merged"
            )
        if source.get("token_id") is not None:
            return key, int(source["token_id"])
        row = vocab.original_vocabs[key].get(str(source.get("token")))
        if row is None:
            raise LosslessError(
                f"tokenizer.tokens.{token}: `{source.get('token')}` is not in `{key}`'s vocabulary"
            )
        return key, row
    key = key_of.get(str(source), str(source))
    if key not in vocab.permutations:
        raise LosslessError(f"tokenizer.tokens.{token}: model `{source}` is not merged")
    token_id = vocab.tokenizer.get_vocab()[token]
    row = vocab.permutations[key][token_id]
    if row < 0:
        raise LosslessError(f"tokenizer.tokens.{token}: `{key}` does not have this token")
    return key, row


def align_vocabularies(
    vocab: Vocabulary, sources: Mapping[str, TensorSource], base_key: str | None
) -> dict[str, TensorSource]:
    """Wrap every source so its embedding tensors are read in the output vocabulary's ids,
    a block of rows at a time (merge/vocab_rows.py)."""
    from lossless.merge.vocab_rows import EmbeddingRows, PermutedSource

    names = sorted({n for s in sources.values() for n in s.tensor_names() if is_embedding(n)})
    tables = {}
    for name in names:
        holders = {k: s for k, s in sources.items() if name in s.tensor_names()}
        tables[name] = EmbeddingRows(
            vocab, name, holders, base_key if base_key in holders else None
        )
    return {
        key: PermutedSource(source, key, {n: t for n, t in tables.items() if key in t.holders})
        for key, source in sources.items()
    }


def vocab_sizes(sources: Mapping[str, TensorSource]) -> dict[str, int]:
    """Rows of each input's input-embedding matrix (its real vocabulary size)."""
    sizes = {}
    for key, source in sources.items():
        names = [
            n
            for n in source.tensor_names()
            if is_embedding(n) and "lm_head" not in n and "embed_out" not in n
        ]
        names = names or [n for n in source.tensor_names() if is_embedding(n)]
        if names:
            sizes[key] = source.shape(names[0])[0]
        elif "vocab_size" in source.config:
            sizes[key] = int(source.config["vocab_size"])
    return sizes


def mismatch_error(sizes: Mapping[str, int]) -> LosslessError:
    listing = ", ".join(f"`{k}` has {v}" for k, v in sizes.items())
    return LosslessError(
        f"the models' vocabularies differ ({listing} tokens)",
        hint="set `tokenizer_source: union` (or `base`, or a model) or a `tokenizer:` block "
        "so embedding rows are lined up token by token",
    )
