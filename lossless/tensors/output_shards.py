"""The output shards, written by position: each tensor, or each block of a tensor's rows, goes
straight to the offsets the layout fixed (writer.layout_shards), from whichever worker computed
it, in any order.

Why not in file order: a streamed tensor's blocks have nowhere to wait within the memory
budget, so a worker streaming the next tensor had to stop until the writer was done with the
current one, and a merge of large tensors ran on one core. Written by position, a block is on
disk as soon as it is computed, and its memory is free.

Each shard is `<file>.partial` until every byte of it is written. A hashing thread follows the
written prefix of each shard, reading it back from the page cache it was just written to, so
the sha256 is ready when the last byte lands; then the file is renamed into place and
`on_done(spec, sha256)` is called (the executor's journal). Not fsynced: the journal's re-hash
on resume finds a shard a power cut damaged (merge/journal.py).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.tensors.safetensors_header import DTYPE_BYTES, TORCH_TO_SAFETENSORS
from lossless.tensors.writer import ShardSpec, TensorSlot

if TYPE_CHECKING:
    import numpy as np
    import torch

_READ_BACK = 1 << 24  # bytes hashed per read of the written prefix


@dataclass
class _Shard:
    spec: ShardSpec
    partial: Path
    final: Path
    data_start: int  # the header's length: where the tensors' bytes begin
    fd: int = -1
    pending: dict[int, int] = field(default_factory=dict)  # written, not yet hashed: begin → end
    hashed: int = 0  # bytes [0, hashed) are in the sha256
    sha: Any = field(default_factory=hashlib.sha256)
    done: bool = False


class OutputShards:
    """The shards of one output dir; `write` may be called from any thread."""

    def __init__(
        self,
        out_dir: Path,
        shards: Sequence[ShardSpec],
        on_done: Callable[[ShardSpec, str], None],
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        """`on_done(spec, sha256)` when a shard is in place (on the hashing thread);
        `on_written(bytes)` after each write (on the writing thread: a progress bar)."""
        self._on_done, self._on_written = on_done, on_written
        self._shards = [
            _Shard(s, out_dir / (s.file + ".partial"), out_dir / s.file, len(s.header))
            for s in shards
        ]
        self._slots: dict[str, tuple[_Shard, TensorSlot]] = {
            slot.name: (shard, slot) for shard in self._shards for slot in shard.spec.slots
        }
        self._lock = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._hasher = threading.Thread(target=self._hash_loop, name="shard-sha256", daemon=True)
        self._hasher.start()

    def write(self, name: str, tensor: torch.Tensor, first_row: int | None = None) -> None:
        """`tensor` is output tensor `name` (`first_row` None), or its rows from `first_row`."""
        import torch

        shard, slot = self._slots[name]
        dtype = TORCH_TO_SAFETENSORS.get(str(tensor.dtype).removeprefix("torch."))
        shape = tuple(tensor.shape)
        if first_row is None:
            if shape != slot.shape or dtype != slot.dtype:
                raise LosslessError(
                    f"output tensor {name!r} is {shape} {dtype}, "
                    f"the plan said {slot.shape} {slot.dtype}"
                )
        elif (
            dtype != slot.dtype
            or len(shape) != len(slot.shape)
            or not slot.shape
            or shape[1:] != slot.shape[1:]
            or first_row + shape[0] > slot.shape[0]
        ):
            raise LosslessError(
                f"output tensor {name!r}: a block of rows from {first_row} is {shape} {dtype}, "
                f"the plan said rows of {slot.shape} {slot.dtype}"
            )
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._put(shard, slot, raw, first_row, shape[0] if shape else 1)

    def write_bits(self, name: str, bits: np.ndarray, first_row: int | None = None) -> None:
        """Output tensor `name` (`first_row` None), or its rows from `first_row`, as the flat
        entries' bits (numpy integers of the dtype's width: methods/direct.py), without torch."""
        shard, slot = self._slots[name]
        count = math.prod(slot.shape)
        row = math.prod(slot.shape[1:]) if first_row is not None and slot.shape else count
        rows = bits.size // row if row else 0
        if (
            bits.ndim != 1
            or bits.itemsize != DTYPE_BYTES[slot.dtype]
            or (first_row is None and bits.size != count)
            or (first_row is not None and (bits.size % row or first_row + rows > slot.shape[0]))
        ):
            at = "" if first_row is None else f" (rows from {first_row})"
            raise LosslessError(
                f"output tensor {name!r}{at}: {bits.size} entries of {bits.itemsize} bytes, "
                f"the plan said {slot.shape} {slot.dtype}"
            )
        self._put(shard, slot, bits.view("uint8"), first_row, max(rows, 1))

    def _put(
        self, shard: _Shard, slot: TensorSlot, raw: Any, first_row: int | None, rows: int
    ) -> None:
        """`raw` (bytes of `rows` rows) at its place: the slot's start, or row `first_row`."""
        begin = shard.data_start + slot.begin
        if first_row:
            begin += first_row * (raw.nbytes // rows)
        if raw.nbytes:
            _pwrite(self._open(shard), raw.data, begin)
            self._written(shard, begin, begin + raw.nbytes)
            if self._on_written is not None:
                self._on_written(raw.nbytes)

    def finish(self) -> None:
        """Wait until every shard is hashed and in place (a shard with no bytes to write is
        opened now); raise if one is missing bytes."""
        for shard in self._shards:
            self._open(shard, writing=False)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._hasher.join()
        if self._error is not None:
            raise self._error
        short = [s.spec.file for s in self._shards if not s.done]
        if short:
            raise RuntimeError(f"output shards left incomplete: {', '.join(short)}")

    def abort(self) -> None:
        """Stop hashing; close and delete every partial file (a finished shard stays)."""
        with self._lock:
            self._closing = True
            self._error = self._error or _Aborted()
            self._lock.notify_all()
        self._hasher.join()
        for shard in self._shards:
            if shard.fd >= 0:
                os.close(shard.fd)
                shard.fd = -1
            if not shard.done:
                shard.partial.unlink(missing_ok=True)

    def _open(self, shard: _Shard, writing: bool = True) -> int:
        """The shard's partial file, made (and its header written) on first use."""
        with self._lock:
            if shard.done:
                if writing:
                    raise RuntimeError(f"{shard.spec.file}: written after it was complete")
                return -1
            if shard.fd < 0:
                flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
                shard.fd = os.open(shard.partial, flags, 0o644)
                header = shard.spec.header
                _pwrite(shard.fd, memoryview(header), 0)
                shard.pending[0] = len(header)
                self._lock.notify_all()
            return shard.fd

    def _written(self, shard: _Shard, begin: int, end: int) -> None:
        with self._lock:
            if begin in shard.pending or begin < shard.hashed:
                raise RuntimeError(f"{shard.spec.file}: bytes at {begin} written twice")
            shard.pending[begin] = end
            self._lock.notify_all()

    def _next_range(self) -> tuple[_Shard, int, int] | None:
        """The next written range at a shard's hashed prefix, waiting for one; None at the end."""
        with self._lock:
            while True:
                if self._error is not None:
                    return None
                for shard in self._shards:
                    if shard.hashed in shard.pending:
                        return shard, shard.hashed, shard.pending.pop(shard.hashed)
                if self._closing:
                    return None
                self._lock.wait()

    def _hash_loop(self) -> None:
        try:
            while (work := self._next_range()) is not None:
                shard, begin, end = work
                for at in range(begin, end, _READ_BACK):
                    shard.sha.update(os.pread(shard.fd, min(_READ_BACK, end - at), at))
                with self._lock:
                    shard.hashed = end
                if shard.hashed == shard.spec.size:
                    self._complete(shard)
        except BaseException as error:  # reaches the executor through finish()
            with self._lock:
                self._error = error

    def _complete(self, shard: _Shard) -> None:
        with self._lock:
            os.close(shard.fd)
            shard.fd, shard.done = -1, True
        os.replace(shard.partial, shard.final)
        self._on_done(shard.spec, shard.sha.hexdigest())


class _Aborted(Exception):
    """The merge stopped: the hashing thread ends without finishing its shards."""


def _pwrite(fd: int, data: memoryview, offset: int) -> None:
    """All of `data` at `offset` (os.pwrite may write less than asked, e.g. over 2 GiB)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
