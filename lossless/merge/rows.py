"""Rows of a job's input tensors, for a merge streamed over row blocks (methods/streamed.py).

A source that can read a row range (`get_rows(name, lo, hi)`, which a safetensors checkpoint
does with one `preadv` of those rows' bytes, and a model with LoRA adapters applied computes
from its base's rows, tensors/adapted.py) is read block by block; one that cannot (a pickle
checkpoint, or adapters applied to one) returns None and is read once whole and sliced, for as
long as the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from lossless.merge.jobs import TensorJob, TensorRef
from lossless.tensors.source import TensorSource

if TYPE_CHECKING:
    import torch


class JobRows:
    """Row blocks of one job's inputs (`streamed.Rows`)."""

    def __init__(
        self, job: TensorJob, sources: Mapping[str, TensorSource], shape: tuple[int, ...]
    ) -> None:
        self.job, self.sources, self.shape = job, sources, shape
        self.has_base = job.base is not None
        self._whole: dict[tuple[str, str], torch.Tensor] = {}

    def _read(self, ref: TensorRef, lo: int, hi: int) -> torch.Tensor:
        key = (ref.model, ref.tensor)
        if key not in self._whole:
            source = self.sources[ref.model]
            reader = getattr(source, "get_rows", None)
            part = reader(ref.tensor, lo, hi) if reader is not None else None
            if part is not None:
                return part
            self._whole[key] = source.get(ref.tensor)
        return self._whole[key][lo:hi]

    def model(self, i: int, lo: int, hi: int) -> torch.Tensor:
        return self._read(self.job.sources[i], lo, hi)

    def base(self, lo: int, hi: int) -> torch.Tensor:
        assert self.job.base is not None
        return self._read(self.job.base, lo, hi)
