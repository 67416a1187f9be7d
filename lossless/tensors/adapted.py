"""A model with LoRA adapters applied lazily: each tensor is adapted when it is asked for.

This is what makes `apply:` (and mergekit's `model+lora`) cost nothing up front: the merge
executor streams tensors through `get` or `get_rows`, and only the ones an adapter targets are
recomputed, W + Σ weightᵢ·(adaptᵢ(W) − W), in float32 and cast back to W's stored dtype. For
plain LoRA adaptᵢ(W) − W is exactly sᵢ·Bᵢ·Aᵢ; for DoRA it is the rescaled weight minus W; for a
tensor the adapter saved whole (modules_to_save) it is that tensor minus W (weight 1 → the tensor).

An adapted tensor is computed in canonical row chunks, whoever asks: `get` fills the whole tensor
chunk by chunk, `get_rows(lo, hi)` computes the chunks covering [lo, hi) and keeps its rows. A
BLAS product of a few rows does not always give the bits of the same rows of the whole product
(a 1-row B·A takes a matrix-vector kernel), so only one chunking makes a streamed merge write
the bytes of a whole one. Chunks are a power of two rows that divides blocks.row_alignment,
so the row blocks of a streamed merge never split one, and hold about CHUNK_ENTRIES entries:
the float32 work of an adapted tensor is a few chunks, never the whole tensor (a LoRA on the
128256 × 8192 embedding of a 70B model costs 8-row chunks, not 4 GiB of float32).
DoRA whose norm runs down W's columns (Embedding, fan_in_fan_out) reads all rows once first,
chunk by chunk, for the column norms, kept per tensor (one float per column).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from lossless.tensors.adapters import Adapter
    from lossless.tensors.source import TensorSource

CHUNK_ENTRIES = 1 << 18  # float32 rows computed at a time: 1 MiB (at least one row)
# float32 copies of a chunk alive at once: W's rows, the sum, and an adapter's delta, merged
# rows and rescaled rows
CHUNK_COPIES = 5

RowReader = Callable[[int, int], "torch.Tensor | None"]


def chunk_rows(shape: Sequence[int]) -> int:
    """Rows per canonical chunk of a tensor of `shape` (8192 columns → 8 rows)."""
    from lossless.methods.blocks import row_alignment

    fit = max(1, CHUNK_ENTRIES // max(1, math.prod(shape[1:])))
    return min(row_alignment(shape), 1 << (fit.bit_length() - 1))


class AdaptedSource:
    """`base` with `adapters` (each with a weight) applied per tensor; a TensorSource."""

    def __init__(
        self, base: TensorSource, adapters: Sequence[tuple[Adapter, float]], label: str
    ) -> None:
        self.base = base
        self.adapters = list(adapters)
        self._label = label
        self._targets: set[str] = set()
        for adapter, _ in self.adapters:
            self._targets |= adapter.targets
        self._norms: dict[str, list[torch.Tensor | None]] = {}  # DoRA column norms by tensor
        self._norms_lock = threading.Lock()

    @property
    def label(self) -> str:
        return self._label

    @property
    def config(self) -> Mapping[str, Any]:
        return self.base.config

    @property
    def path(self) -> Path | None:
        """The base checkpoint's directory, for code that copies its non-weight files."""
        return getattr(self.base, "path", None)

    def tensor_names(self) -> list[str]:
        return self.base.tensor_names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def dtype(self, name: str) -> str:
        return self.base.dtype(name)

    def working_bytes(self, name: str) -> int:
        """Bytes of float32 work that reading tensor `name` holds besides the rows returned:
        a few canonical chunks for an adapted tensor, nothing for an untouched one."""
        if name not in self._targets:
            return 0
        shape = self.base.shape(name)
        rows = min(chunk_rows(shape), shape[0]) if shape else 1
        return CHUNK_COPIES * 4 * rows * math.prod(shape[1:])

    def get_rows(self, name: str, lo: int, hi: int) -> torch.Tensor | None:
        """Rows [lo, hi) as `get` computes them, bit for bit, reading only the base's rows of
        the chunks that cover them; None (read whole) when the base cannot read rows (a pickle
        checkpoint)."""
        rows = getattr(self.base, "get_rows", None)
        if rows is None:
            return None
        if name not in self._targets:
            return rows(name, lo, hi)
        return self._adapted(name, lo, hi, lambda a, b: rows(name, a, b))

    def get(self, name: str) -> torch.Tensor:
        """The adapted tensor; an untouched one is the base's own tensor object."""
        if name not in self._targets:
            return self.base.get(name)
        rows = getattr(self.base, "get_rows", None)
        whole: list[torch.Tensor] = []

        def read(lo: int, hi: int) -> torch.Tensor:
            part = rows(name, lo, hi) if rows is not None and not whole else None
            if part is not None:
                return part
            if not whole:
                whole.append(self.base.get(name))
            return whole[0][lo:hi]

        out = self._adapted(name, 0, self.base.shape(name)[0], read)
        assert out is not None  # `read` always gives rows
        return out

    def _adapted(self, name: str, lo: int, hi: int, read: RowReader) -> torch.Tensor | None:
        """Rows [lo, hi) of the adapted tensor, computed chunk by chunk from the base's rows."""
        import torch

        shape = self.base.shape(name)
        step = chunk_rows(shape)
        norms = self._column_norms(name, shape, step, read)
        if norms is None:
            return None
        out: torch.Tensor | None = None
        for start in range(lo // step * step, hi, step):
            end = min(start + step, shape[0])
            weight = read(start, end)
            if weight is None:
                return None
            if out is None:
                out = torch.empty((hi - lo, *shape[1:]), dtype=weight.dtype)
            chunk = self._chunk(name, weight, start, end, norms)
            first, last = max(start, lo), min(end, hi)
            out[first - lo : last - lo] = chunk[first - start : last - start]
        if out is None:  # no rows asked for
            from lossless.tensors.safetensors_header import SAFETENSORS_TO_TORCH

            stored = getattr(torch, SAFETENSORS_TO_TORCH[self.base.dtype(name)])
            return torch.empty((0, *shape[1:]), dtype=stored)
        return out

    def _chunk(
        self,
        name: str,
        weight: torch.Tensor,
        lo: int,
        hi: int,
        norms: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        """One canonical chunk of the adapted tensor, in W's stored dtype."""
        original = weight.float()
        if len(self.adapters) == 1 and self.adapters[0][1] == 1.0:
            out = self.adapters[0][0].apply_rows(name, original, lo, hi, norms[0])
        else:
            out = original.clone()
            for (adapter, scale), norm in zip(self.adapters, norms, strict=True):
                if name in adapter.targets:
                    out += scale * (adapter.apply_rows(name, original, lo, hi, norm) - original)
        return out.to(weight.dtype)

    def _column_norms(
        self, name: str, shape: Sequence[int], step: int, read: RowReader
    ) -> list[torch.Tensor | None] | None:
        """Per adapter, the column norms of W + ΔW for a DoRA that norms columns (None for the
        others), summed over the canonical chunks in order; None when the base gives no rows."""
        needs = [adapter.norms_columns(name) for adapter, _ in self.adapters]
        if not any(needs):
            return [None] * len(self.adapters)
        with self._norms_lock:
            if name not in self._norms:
                sums: list[torch.Tensor | None] = [None] * len(self.adapters)
                for start in range(0, shape[0], step):
                    end = min(start + step, shape[0])
                    weight = read(start, end)
                    if weight is None:
                        return None
                    original = weight.float()
                    for i, (adapter, _) in enumerate(self.adapters):
                        if needs[i]:
                            part = adapter.column_squares(name, original, start, end)
                            total = sums[i]
                            sums[i] = part if total is None else total + part
                self._norms[name] = [None if s is None else s.sqrt().float() for s in sums]
            return self._norms[name]
