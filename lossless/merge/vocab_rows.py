"""Embedding rows in the output vocabulary's ids, made a block of rows at a time.

When the models' vocabularies differ (merge/vocab.py), every input's embedding and lm_head
rows are re-indexed to the output's token ids before the method runs. A 70B model's embedding
is 128256 × 8192 (2 GiB in bf16), so the re-indexed matrix is never built whole: `PermutedSource`
answers `get_rows(name, lo, hi)` by reading only the input rows those output ids map to (runs of
consecutive rows, one `preadv` each) and the stand-in rows of the ids the input lacks, which are
made from the other models' rows on demand. The merge keeps its memory budget (issue 18), and a
whole-tensor `get` is the same rows, bit for bit.

Stand-ins (mergekit's rules): the row set in `tokenizer.tokens`; else the row of the only model
that has the token; else the base's row if the base has it; else the mean of the rows of the
models that have it (summed in their common dtype, model by model, as mergekit does); else
zeros. Rows past the tokenizer (`pad_to_multiple_of`) hold the mean of the model's token rows.
mergekit takes that mean with `torch.mean` over the whole matrix in its dtype; here it is
summed in float64 over row blocks and rounded once, so it needs no whole matrix (the two can
differ in the last bit of those padding rows, which no token reads).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from lossless.errors import LosslessError
from lossless.tensors.safetensors_header import DTYPE_BYTES, SAFETENSORS_TO_TORCH
from lossless.tensors.source import TensorSource

if TYPE_CHECKING:
    from lossless.merge.vocab import Vocabulary

PASS_BYTES = 32 << 20  # rows read per block of the padding-mean pass, and per gathered run


class EmbeddingRows:
    """One embedding tensor of every model that has it, re-indexed to the output vocabulary."""

    def __init__(
        self,
        vocab: Vocabulary,
        name: str,
        holders: Mapping[str, TensorSource],
        base_key: str | None,
        key_of: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.holders, self.size = name, dict(holders), vocab.size
        self.keys = list(holders)
        self.row_shape = tuple(holders[self.keys[0]].shape(name)[1:])
        self.dtype = functools.reduce(
            torch.promote_types, (_stored_dtype(s, name) for s in holders.values())
        )
        ids = vocab.tokenizer.get_vocab()
        self.tokens = len(ids)
        self.index = {k: torch.tensor(vocab.permutations[k], dtype=torch.int64) for k in self.keys}
        self._index_matrix = torch.stack([self.index[k] for k in self.keys])  # [models, ids]
        self.have = have = self._index_matrix >= 0
        # the stand-in of each id: copied from (model, row), averaged over the holders, or zero
        self.copy_model = torch.full((self.size,), -1, dtype=torch.int64)
        self.copy_row = torch.full((self.size,), -1, dtype=torch.int64)
        self.forced = torch.zeros(self.size, dtype=torch.bool)
        count = have.sum(dim=0)
        only = count == 1
        self._copy_from(only, have.to(torch.int8).argmax(dim=0))
        base = self.keys.index(base_key) if base_key in self.keys else None
        if base is not None:
            self._copy_from((count > 1) & have[base], torch.full_like(count, base))
        self.averaged = (count > 1) & (self.copy_model < 0)
        for token, spec in vocab.tokens.items():
            token_id = ids.get(token)
            if token_id is None or token_id >= self.size:
                continue
            self.forced[token_id] = (
                bool(spec.get("force", False)) if isinstance(spec, Mapping) else False
            )
            self.averaged[token_id] = False
            self.copy_model[token_id] = self.copy_row[token_id] = -1
            where = _configured_row(spec, key_of or {}, vocab, token, self)
            if where is not None:
                self.copy_model[token_id], self.copy_row[token_id] = where
        self._pad_means: dict[str, torch.Tensor] = {}
        self._whole: dict[str, torch.Tensor] = {}  # inputs that cannot read rows, read once

    def _copy_from(self, where: torch.Tensor, model: torch.Tensor) -> None:
        """Stand-ins at `where` copied from model `model[id]`'s own row of each id."""
        rows = self._index_matrix.gather(0, model.unsqueeze(0))[0]
        self.copy_model[where] = model[where]
        self.copy_row[where] = rows[where]

    def rows(self, key: str, lo: int, hi: int) -> torch.Tensor:
        """Output rows [lo, hi) of model `key`'s re-indexed tensor, in its stored dtype."""
        source = self.holders[key]
        dtype = _stored_dtype(source, self.name)
        out = torch.empty((hi - lo, *self.row_shape), dtype=dtype)
        real = min(hi, self.tokens)
        if real > lo:
            index = self.index[key][lo:real]
            own = (index >= 0) & ~self.forced[lo:real]
            picked = torch.nonzero(own).view(-1)
            if picked.numel():
                out[picked] = self._gather(key, index[picked])
            missing = torch.nonzero(~own).view(-1)
            if missing.numel():
                out[missing] = self._stand_ins(missing + lo).to(dtype)
        if hi > real:  # padding rows past the tokenizer
            out[max(lo, real) - lo :] = self._pad_mean(key).to(dtype)
        return out

    def _gather(self, key: str, rows: torch.Tensor) -> torch.Tensor:
        """Input rows `rows` (any order, repeats allowed) of model `key`."""
        unique, inverse = torch.unique(rows, sorted=True, return_inverse=True)
        runs = self._read_runs(key, unique)
        if runs is None:  # the input reads no rows (a pickle checkpoint): read it once whole
            if key not in self._whole:
                self._whole[key] = self.holders[key].get(self.name)
            return self._whole[key][rows]
        return runs[inverse]

    def _read_runs(self, key: str, unique: torch.Tensor) -> torch.Tensor | None:
        """Rows `unique` (sorted) read as runs of consecutive rows, each in reads of at most
        PASS_BYTES; None when the input cannot read rows."""
        source = self.holders[key]
        read = getattr(source, "get_rows", None)
        if read is None or key in self._whole:
            return None
        cap = max(1, PASS_BYTES // max(1, _row_bytes(source, self.name)))
        breaks = torch.nonzero(unique[1:] - unique[:-1] != 1).view(-1) + 1
        bounds = [0, *breaks.tolist(), unique.numel()]
        parts = []
        for a, b in itertools.pairwise(bounds):
            first, stop = int(unique[a]), int(unique[a]) + (b - a)
            for start in range(first, stop, cap):
                part = read(self.name, start, min(stop, start + cap))
                if part is None:
                    return None
                parts.append(part)
        return torch.cat(parts)

    def _stand_ins(self, ids: torch.Tensor) -> torch.Tensor:
        """Stand-in rows of output `ids` (all below the tokenizer's size), in the holders'
        common dtype."""
        out = torch.zeros((ids.numel(), *self.row_shape), dtype=self.dtype)
        models = self.copy_model[ids]
        for m, key in enumerate(self.keys):
            at = torch.nonzero(models == m).view(-1)
            if at.numel():
                out[at] = self._gather(key, self.copy_row[ids[at]]).to(self.dtype)
        averaged = torch.nonzero(self.averaged[ids]).view(-1)
        if averaged.numel():
            # ids with the same holders are averaged together, the holders' rows in model order
            groups: dict[tuple[bool, ...], list[int]] = {}
            holders = self.have[:, ids[averaged]].t().tolist()
            for position, who in zip(averaged.tolist(), holders, strict=True):
                groups.setdefault(tuple(who), []).append(position)
            for who, positions in groups.items():
                at = torch.tensor(positions, dtype=torch.int64)
                total = torch.zeros((len(positions), *self.row_shape), dtype=self.dtype)
                for key, has in zip(self.keys, who, strict=True):
                    if has:  # mergekit's sum: in the common dtype, model by model, then ÷
                        total = total + self._gather(key, self.index[key][ids[at]])
                out[at] = total / sum(who)
        return out

    def _pad_mean(self, key: str) -> torch.Tensor:
        """The mean of model `key`'s re-indexed token rows, summed in float64 over row blocks."""
        if key not in self._pad_means:
            # a float64 copy of each block is summed: blocks of an eighth of PASS_BYTES
            step = max(1, PASS_BYTES // 8 // max(1, _row_bytes(self.holders[key], self.name)))
            total = torch.zeros(self.row_shape, dtype=torch.float64)
            for lo in range(0, self.tokens, step):
                total += self.rows(key, lo, min(self.tokens, lo + step)).double().sum(dim=0)
            self._pad_means[key] = total / max(1, self.tokens)
        return self._pad_means[key]

    def working_bytes(self, key: str) -> int:
        """What making a block of rows holds besides the rows: the runs read and put together,
        a padding-mean block and its float64 copy, the float64 mean."""
        whole = self.size * _row_bytes(self.holders[key], self.name)
        return 3 * min(PASS_BYTES, whole) + 8 * math.prod(self.row_shape)


def _stored_dtype(source: TensorSource, name: str) -> torch.dtype:
    return getattr(torch, SAFETENSORS_TO_TORCH[source.dtype(name)])


def _row_bytes(source: TensorSource, name: str) -> int:
    shape = source.shape(name)
    return math.prod(shape[1:]) * DTYPE_BYTES.get(source.dtype(name), 4)


def _configured_row(
    spec: Any, key_of: Mapping[str, str], vocab: Vocabulary, token: str, table: EmbeddingRows
) -> tuple[int, int] | None:
    """A `tokenizer.tokens` entry → (model position, input row), or None for a zero row."""
    from lossless.merge.vocab import token_row_source

    where = token_row_source(spec, key_of, vocab, token)
    if where is None:
        return None
    key, row = where
    if key not in table.keys:
        raise LosslessError(
            f"tokenizer.tokens.{token}: model `{key}` has no tensor {table.name!r}",
            hint="take the token's row from a model that has this tensor",
        )
    return table.keys.index(key), row


class PermutedSource:
    """A TensorSource whose embedding tensors are read in the output vocabulary's ids."""

    def __init__(self, inner: TensorSource, key: str, tables: Mapping[str, EmbeddingRows]) -> None:
        self._inner, self._key, self._tables = inner, key, dict(tables)

    @property
    def label(self) -> str:
        return self._inner.label

    @property
    def config(self) -> Mapping[str, Any]:
        return self._inner.config

    def tensor_names(self) -> list[str]:
        return self._inner.tensor_names()

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._tables:
            return (self._tables[name].size, *self._tables[name].row_shape)
        return self._inner.shape(name)

    def dtype(self, name: str) -> str:
        return self._inner.dtype(name)

    def get(self, name: str) -> torch.Tensor:
        if name in self._tables:
            return self._tables[name].rows(self._key, 0, self._tables[name].size)
        return self._inner.get(name)

    def working_bytes(self, name: str) -> int:
        """Bytes held while making rows (budget.working_bytes): the inner source's, plus the
        runs and stand-ins of a re-indexed tensor (all of it when its input reads no rows)."""
        working = getattr(self._inner, "working_bytes", None)
        inner = 0 if working is None else int(working(name))
        if name not in self._tables:
            return inner
        if getattr(self._inner, "get_rows", None) is None:
            return inner + math.prod(self._inner.shape(name)) * 4
        return inner + self._tables[name].working_bytes(self._key)

    def get_rows(self, name: str, lo: int, hi: int) -> torch.Tensor | None:
        """Rows [lo, hi) of a tensor; None (read whole) when the inner source reads no rows."""
        if name in self._tables:
            return self._tables[name].rows(self._key, lo, hi)
        rows = getattr(self._inner, "get_rows", None)
        return None if rows is None else rows(name, lo, hi)
