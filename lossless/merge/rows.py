"""Rows of a job's input tensors, for a merge streamed over row blocks (methods/streamed.py).

A source that can read a row range (`get_rows(name, lo, hi)`, which a safetensors checkpoint
does with one `preadv` of those rows' bytes, and a model with LoRA adapters applied computes
from its base's rows, tensors/adapted.py) is read block by block; one that cannot (a pickle
checkpoint, or adapters applied to one) returns None and is read once whole and sliced, for as
long as the job runs.

On a device (merge/device.py) the rows are moved there in their stored dtype, and the next
block of each input is read and moved on a thread of its own while this one is merged: a
streamed pass reads its blocks in order, so the read of block k + 1 overlaps the math of
block k. A read out of that order (a tie-order replay's random access) is read directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from lossless.merge.jobs import TensorJob, TensorRef
from lossless.tensors.source import TensorSource

if TYPE_CHECKING:
    import torch


class JobRows:
    """Row blocks of one job's inputs (`streamed.Rows`), on `device` (None: as read)."""

    def __init__(
        self,
        job: TensorJob,
        sources: Mapping[str, TensorSource],
        shape: tuple[int, ...],
        *,
        device: torch.device | None = None,
    ) -> None:
        self.job, self.sources, self.shape = job, sources, shape
        self.has_base = job.base is not None
        self.device = device
        self._whole: dict[tuple[str, str], torch.Tensor] = {}
        self._ahead: dict[tuple[str, str], tuple[int, int, Future[torch.Tensor]]] = {}
        self._pool = ThreadPoolExecutor(1, "rows-ahead") if device is not None else None

    def _host(self, ref: TensorRef, lo: int, hi: int) -> torch.Tensor:
        key = (ref.model, ref.tensor)
        if key not in self._whole:
            source = self.sources[ref.model]
            reader = getattr(source, "get_rows", None)
            part = reader(ref.tensor, lo, hi) if reader is not None else None
            if part is not None:
                return part
            self._whole[key] = source.get(ref.tensor)
        return self._whole[key][lo:hi]

    def _moved(self, ref: TensorRef, lo: int, hi: int) -> torch.Tensor:
        return self._host(ref, lo, hi).to(self.device)

    def _read(self, ref: TensorRef, lo: int, hi: int) -> torch.Tensor:
        if self._pool is None:
            return self._host(ref, lo, hi)
        key = (ref.model, ref.tensor)
        ahead = self._ahead.pop(key, None)
        if ahead is not None and ahead[:2] == (lo, hi):
            rows = ahead[2].result()
        else:
            if ahead is not None:
                ahead[2].cancel()
            rows = self._moved(ref, lo, hi)
        rows_total = self.shape[0] if self.shape else 0
        if hi < rows_total:  # the next block of this input, read while this one is merged
            nxt = (hi, min(rows_total, hi + (hi - lo)))
            self._ahead[key] = (*nxt, self._pool.submit(self._moved, ref, *nxt))
        return rows

    def model(self, i: int, lo: int, hi: int) -> torch.Tensor:
        return self._read(self.job.sources[i], lo, hi)

    def base(self, lo: int, hi: int) -> torch.Tensor:
        assert self.job.base is not None
        return self._read(self.job.base, lo, hi)

    def close(self) -> None:
        """Drop the blocks read ahead and the reading thread."""
        for _lo, _hi, future in self._ahead.values():
            future.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
