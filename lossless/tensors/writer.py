"""Output shards in the Hugging Face layout, laid out before any tensor is computed.

Every output tensor's name, shape and dtype are known from the plan, so the shard files, each
file's safetensors header and every tensor's byte offsets are fixed up front. That makes the
output deterministic (same plan → same bytes, whatever the thread scheduling) and lets a shard
be streamed to disk one tensor at a time, hashed as it is written, never held whole in memory.

Shard names follow `save_pretrained`: `model-00001-of-00003.safetensors` + the index, or a lone
`model.safetensors` when everything fits in one shard.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lossless.errors import LosslessError
from lossless.tensors.checkpoint import INDEX, SINGLE
from lossless.tensors.safetensors_header import DTYPE_BYTES, TORCH_TO_SAFETENSORS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor's bytes go in its shard (offsets relative to the data region)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors spelling, e.g. "BF16"
    begin: int
    end: int


@dataclass(frozen=True)
class ShardSpec:
    file: str  # e.g. "model-00002-of-00004.safetensors"
    slots: tuple[TensorSlot, ...]

    @property
    def header(self) -> bytes:
        """The safetensors header bytes (length prefix included), padded to 8 bytes."""
        entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
        for s in self.slots:
            entries[s.name] = {
                "dtype": s.dtype,
                "shape": list(s.shape),
                "data_offsets": [s.begin, s.end],
            }
        text = json.dumps(entries, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        return len(text).to_bytes(8, "little") + text

    @property
    def size(self) -> int:
        return len(self.header) + (self.slots[-1].end if self.slots else 0)


def layout_shards(
    tensors: Sequence[tuple[str, tuple[int, ...], str]], shard_size: int
) -> list[ShardSpec]:
    """Pack `(name, shape, torch dtype name)` in order into shards of at most `shard_size`
    parameters (mergekit's unit); a tensor larger than that gets a shard of its own."""
    groups: list[list[tuple[str, tuple[int, ...], str]]] = []
    count = 0
    for name, shape, dtype in tensors:
        numel = math.prod(shape)
        if not groups or (count + numel > shard_size and groups[-1]):
            groups.append([])
            count = 0
        groups[-1].append((name, tuple(shape), dtype))
        count += numel
    specs = []
    for i, group in enumerate(groups):
        file = SINGLE if len(groups) == 1 else f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        slots, offset = [], 0
        for name, shape, dtype in group:
            st_dtype = TORCH_TO_SAFETENSORS.get(dtype.removeprefix("torch."))
            if st_dtype is None:
                raise LosslessError(f"cannot write tensor {name!r} of dtype {dtype!r}")
            nbytes = math.prod(shape) * DTYPE_BYTES[st_dtype]
            slots.append(TensorSlot(name, shape, st_dtype, offset, offset + nbytes))
            offset += nbytes
        specs.append(ShardSpec(file, tuple(slots)))
    return specs


def write_index(out_dir: Path, shards: Sequence[ShardSpec]) -> Path | None:
    """`model.safetensors.index.json` for a sharded output; nothing for a single file."""
    if len(shards) <= 1:
        return None
    weight_map = {s.name: shard.file for shard in shards for s in shard.slots}
    total = sum(s.end - s.begin for shard in shards for s in shard.slots)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    path = out_dir / INDEX
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


class ShardWriter:
    """Streams one shard: header first, then each tensor in slot order, hashing as it goes.

    Written to `<file>.partial` and renamed when complete, so a file with the final name is
    always whole. The sha256 runs on a thread of its own (hashlib lets go of the GIL on large
    buffers), beside the write and the merge math, a few buffers behind at most.

    Not fsynced: the executor's resume re-hashes every shard its journal lists, so a shard whose
    bytes a power cut lost is found and recomputed, and a killed process loses nothing the page
    cache holds (see merge/executor.py)."""

    def __init__(self, out_dir: Path, spec: ShardSpec) -> None:
        self.spec = spec
        self.path = out_dir / spec.file
        self._partial = out_dir / (spec.file + ".partial")
        self._file: BinaryIO = self._partial.open("wb")
        self._hasher = _Hasher()
        self._next = 0
        self._put(spec.header)

    def _put(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._hasher.update(data)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        import torch

        slot = self.spec.slots[self._next]
        if name != slot.name:
            raise RuntimeError(f"{self.spec.file}: expected tensor {slot.name!r}, got {name!r}")
        got_dtype = TORCH_TO_SAFETENSORS.get(str(tensor.dtype).removeprefix("torch."))
        if tuple(tensor.shape) != slot.shape or got_dtype != slot.dtype:
            raise LosslessError(
                f"output tensor {name!r} is {tuple(tensor.shape)} {got_dtype}, "
                f"the plan said {slot.shape} {slot.dtype}"
            )
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._put(raw.data)  # the tensor's bytes, no copy
        self._next += 1

    def write_parts(self, name: str, parts: Iterable[torch.Tensor]) -> None:
        """Write one tensor given as consecutive blocks of rows (a streamed merge's output)."""
        import torch

        slot = self.spec.slots[self._next]
        if name != slot.name:
            raise RuntimeError(f"{self.spec.file}: expected tensor {slot.name!r}, got {name!r}")
        rows = 0
        for part in parts:
            got_dtype = TORCH_TO_SAFETENSORS.get(str(part.dtype).removeprefix("torch."))
            if tuple(part.shape[1:]) != tuple(slot.shape[1:]) or got_dtype != slot.dtype:
                raise LosslessError(
                    f"output tensor {name!r}: a block is {tuple(part.shape)} {got_dtype}, "
                    f"the plan said rows of {slot.shape} {slot.dtype}"
                )
            rows += part.shape[0]
            raw = part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            self._put(raw.data)
        if (rows, *slot.shape[1:]) != tuple(slot.shape):
            raise LosslessError(
                f"output tensor {name!r}: {rows} rows written, expected {slot.shape}"
            )
        self._next += 1

    def close(self) -> str:
        """Flush and rename into place; returns the file's sha256."""
        if self._next != len(self.spec.slots):
            raise RuntimeError(f"{self.spec.file}: closed after {self._next} tensors")
        self._file.close()
        digest = self._hasher.hexdigest()
        os.replace(self._partial, self.path)
        return digest

    def abort(self) -> None:
        self._hasher.stop()
        self._file.close()
        self._partial.unlink(missing_ok=True)


class _Hasher:
    """sha256 of the buffers given, in order, on a thread; holds at most QUEUED of them."""

    QUEUED = 4

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(self.QUEUED)
        self._thread = threading.Thread(target=self._run, name="shard-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes | memoryview) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.stop()
        return self._hash.hexdigest()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
