"""The one interface the merge executor reads models through.

A `TensorSource` is a model's tensors by name, loaded one at a time on demand. A checkpoint on
disk (safetensors mmap) is one; a model with LoRA adapters applied lazily (W + scale·B·A computed
when a tensor is asked for) is another, wrapping the first. The executor never knows which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class TensorSource(Protocol):
    """A model's weights, one tensor at a time."""

    @property
    def label(self) -> str:
        """How the model is named in messages (the recipe reference)."""
        ...

    @property
    def config(self) -> Mapping[str, Any]:
        """The model's config.json as a dict."""
        ...

    def tensor_names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> str:
        """The stored dtype, in safetensors' spelling ("BF16", "F32", ...)."""
        ...

    def get(self, name: str) -> torch.Tensor:
        """The tensor, read lazily (a memory map where possible). Callers must not modify it."""
        ...
