"""An adapter's weights file: the LoRA factors read whole, the tensors saved whole read by rows.

peft saves some tensors whole in adapter_model.safetensors: `modules_to_save` (often the
lm_head and embed_tokens of a fine-tune that added tokens), trained biases, an embedding's base
weight. At Llama-3-70B's size one lm_head is 128256 × 8192, 4 GiB in float32, so these are not
loaded with the adapter: a `SavedTensor` reads the rows a merge block asks for straight from the
file (`preadv`, as tensors/checkpoint.py reads a model), and nothing of it stays in memory. The
LoRA factors (r × in and out × r) are small, and read whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.tensors.safetensors_header import read_header

if TYPE_CHECKING:
    import torch


class SavedTensor:
    """One tensor of an adapter file, read when asked for: rows along its first dimension, or
    whole. A pickle adapter's tensors are held (`held`), as torch.load gives them."""

    def __init__(
        self,
        label: str,
        shape: tuple[int, ...],
        *,
        file: Path | None = None,
        entry: Mapping[str, Any] | None = None,
        held: torch.Tensor | None = None,
        check: bool = True,
    ) -> None:
        self.label, self.shape = label, tuple(shape)
        self._file, self._entry, self._held, self._check = file, entry, held, check

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) (entries of a 1-D tensor), checked finite unless allowed not to be."""
        if self._held is not None:
            return self._held[lo:hi]
        from lossless.tensors.checkpoint import _pread_tensor, check_finite, rows_entry

        assert self._file is not None and self._entry is not None
        fd = os.open(self._file, os.O_RDONLY)
        try:
            out = _pread_tensor(fd, self._file, rows_entry(self._entry, lo, hi))
        finally:
            os.close(fd)
        if self._check:
            check_finite(out, self.label)
        return out

    def whole(self) -> torch.Tensor:
        if self._held is not None:
            return self._held
        return self.rows(0, self.shape[0] if self.shape else 1).reshape(self.shape)


def read_weights(
    weights: Path, pickled: Path, *, allow_pickle: bool, allow_non_finite: bool
) -> dict[str, SavedTensor]:
    """Every tensor of the adapter's weights file, none read yet (a pickle's: all read)."""
    if weights.is_file():
        header = read_header(weights)  # refuses a corrupt or hostile header before any read
        return {
            key: SavedTensor(
                f"adapter {weights.parent}: tensor {key!r}",
                tuple(entry["shape"]),
                file=weights,
                entry=entry,
                check=not allow_non_finite,
            )
            for key, entry in header.items()
        }
    if pickled.is_file():
        if not allow_pickle:
            raise LosslessError(
                f"{pickled} is a pickle file, which can run code when loaded",
                hint="convert it to adapter_model.safetensors, or pass --allow-pickle if you "
                "trust its author",
            )
        import torch

        from lossless.tensors.checkpoint import check_finite

        tensors = torch.load(pickled, map_location="cpu", weights_only=True)
        for key, tensor in tensors.items():
            if not allow_non_finite:
                check_finite(tensor, f"adapter {pickled.parent}: tensor {key!r}")
        return {
            key: SavedTensor(key, tuple(tensor.shape), held=tensor)
            for key, tensor in tensors.items()
        }
    raise LosslessError(
        f"{weights.parent}: no adapter weights ({weights.name} is missing)",
        hint="the adapter directory is incomplete; save it again with save_pretrained",
    )
