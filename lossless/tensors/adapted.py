"""A model with LoRA adapters applied lazily: each tensor is adapted when it is asked for.

This is what makes `apply:` (and mergekit's `model+lora`) cost nothing up front: the merge
executor streams tensors through `get`, and only the ones an adapter targets are recomputed,
W + Σ weightᵢ·(adaptᵢ(W) − W), in float32 and cast back to W's stored dtype. For plain LoRA
adaptᵢ(W) − W is exactly sᵢ·Bᵢ·Aᵢ; for DoRA it is the rescaled weight minus W; for a tensor
the adapter saved whole (modules_to_save) it is that tensor minus W (weight 1 → the tensor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from lossless.tensors.adapters import Adapter
    from lossless.tensors.source import TensorSource


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

    def get_rows(self, name: str, lo: int, hi: int) -> torch.Tensor | None:
        """Rows of an untouched tensor as the base reads them; None (read whole) for an adapted
        one, whose W + scale·B·A is computed on the whole matrix."""
        rows = getattr(self.base, "get_rows", None)
        if name in self._targets or rows is None:
            return None
        return rows(name, lo, hi)

    def get(self, name: str) -> torch.Tensor:
        """The adapted tensor; an untouched one is the base's own tensor object."""
        weight = self.base.get(name)
        if name not in self._targets:
            return weight
        original = weight.float()
        single = len(self.adapters) == 1 and self.adapters[0][1] == 1.0
        if single:
            out = self.adapters[0][0].apply(name, original)
        else:
            out = original.clone()
            for adapter, scale in self.adapters:
                if name in adapter.targets:
                    out += scale * (adapter.apply(name, original) - original)
        return out.to(weight.dtype)
