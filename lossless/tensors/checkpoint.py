"""A local model directory as a `TensorSource`: safetensors memory maps, checked before use.

Layouts understood, as the hub writes them:
- `model.safetensors.index.json` + shards (`weight_map`: tensor name → shard file);
- a single `model.safetensors`;
- `pytorch_model.bin[.index.json]` pickle checkpoints, refused unless `allow_pickle=True`
  (a pickle can run code; `torch.load(weights_only=True, mmap=True)` is then used).

Every safetensors header is validated by hand before any tensor is read
(`safetensors_header.py`), so a corrupt or hostile file fails with a message naming the file and
the defect instead of a crash or a huge allocation.

A tensor is a private (copy-on-write) map of its own bytes, one map per tensor read (one
descriptor per shard, kept open; worker threads read concurrently), gone with the tensor. The
merge then reads the page cache itself: no copy out of it, no fresh pages to fault in. Mapping
the whole files instead, as safetensors' `safe_open` does, would count every page ever touched
in the merge's RSS (4.7 GiB peak for a 300M-parameter 4-model merge); here only the tensors in
flight count. Bytes that do not start at a multiple of their dtype's size are read with
`os.preadv` into a new tensor instead. `read_bits` (the merges without torch) gives the same
maps as numpy integers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.tensors.safetensors_header import (
    DTYPE_BYTES,
    SAFETENSORS_TO_TORCH,
    TORCH_TO_SAFETENSORS,
    read_header,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"

CONFIG_SHAPES = (
    ("vocab_size", ("embed_tokens.weight", "wte.weight", "embed_in.weight"), 0),
    ("hidden_size", ("embed_tokens.weight", "wte.weight", "embed_in.weight"), 1),
    ("intermediate_size", (".mlp.up_proj.weight", ".mlp.gate_proj.weight"), 0),
)


def config_problems(
    config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], layers: int | None
) -> list[str]:
    """How a model's config.json disagrees with its weights (names and sizes), e.g.
    ["config.json says hidden_size 64, but model.embed_tokens.weight is [512, 48]"].
    `layers`: how many layer blocks the tensor names hold (None: not known)."""
    problems = []
    for key, ends, axis in CONFIG_SHAPES:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        for name, shape in shapes.items():
            if name.endswith(ends) and len(shape) > axis:
                if shape[axis] != value:
                    problems.append(f"config.json says {key} {value}, but {name} is {list(shape)}")
                break
    stated = config.get("num_hidden_layers")
    if isinstance(stated, int) and layers is not None and layers and stated != layers:
        problems.append(
            f"config.json says num_hidden_layers {stated}, but the weights hold {layers}"
        )
    return problems


class Checkpoint:
    """A model directory's tensors, read lazily; one open handle per shard, reused."""

    def __init__(
        self,
        path: str | Path,
        label: str | None = None,
        allow_pickle: bool = False,
        allow_non_finite: bool = False,
    ):
        self.path = Path(path)
        self._allow_non_finite = allow_non_finite
        self._label = label or str(path)
        self._allow_pickle = allow_pickle
        self._handles: dict[str, Any] = {}  # shard file name → file descriptor / state dict
        self._lock = threading.Lock()  # handles are opened from worker threads
        self._headers: dict[str, dict[str, dict[str, Any]]] = {}  # shard → entries
        self._where: dict[str, str] = {}  # tensor name → shard file name
        self._checked: dict[str, int] = {}  # tensor name → rows [0, n) checked finite
        self._pickle = False
        self._config: dict[str, Any] | None = None
        self._index()

    # -- layout ------------------------------------------------------------------------------

    def _index(self) -> None:
        if not self.path.is_dir():
            raise LosslessError(f"{self._label}: model directory {self.path} does not exist")
        index, single = self.path / INDEX, self.path / SINGLE
        if index.is_file():
            weight_map = _weight_map(index)
            shards = sorted(set(weight_map.values()))
            for shard in shards:
                file = self.path / shard
                if Path(shard).name != shard or not file.is_file():
                    raise LosslessError(
                        f"{index}: lists shard {shard!r}, which is not a file in {self.path}",
                        hint="the download is incomplete; fetch the missing shard",
                    )
                self._headers[shard] = read_header(file)
            for name, shard in weight_map.items():
                if name not in self._headers[shard]:
                    raise LosslessError(f"{index}: tensor {name!r} is not in shard {shard}")
            self._where = dict(weight_map)
        elif single.is_file():
            self._headers[SINGLE] = read_header(single)
            self._where = {name: SINGLE for name in self._headers[SINGLE]}
        elif (self.path / PICKLE_INDEX).is_file() or (self.path / PICKLE_SINGLE).is_file():
            self._index_pickle()
        else:
            raise LosslessError(
                f"{self._label}: no {SINGLE} or {INDEX} in {self.path}",
                hint="point at a Hugging Face model directory saved with safetensors",
            )

    def _index_pickle(self) -> None:
        if not self._allow_pickle:
            raise LosslessError(
                f"{self._label}: {self.path} holds only pickle (.bin) weights, which can run "
                "arbitrary code when loaded",
                hint="pass --allow-pickle (or --lazy-unpickle) if you trust this model",
            )
        self._pickle = True
        if (self.path / PICKLE_INDEX).is_file():
            self._where = _weight_map(self.path / PICKLE_INDEX)
            for shard in sorted(set(self._where.values())):
                if Path(shard).name != shard or not (self.path / shard).is_file():
                    raise LosslessError(
                        f"{self.path / PICKLE_INDEX}: lists shard {shard!r}, which is not a "
                        f"file in {self.path}"
                    )
        else:
            state = self._open(PICKLE_SINGLE)
            self._where = {name: PICKLE_SINGLE for name in state}

    def _open(self, shard: str) -> Any:
        with self._lock:
            handle = self._handles.get(shard)
            if handle is None:
                file = str(self.path / shard)
                if self._pickle:
                    import torch

                    handle = torch.load(file, weights_only=True, mmap=True, map_location="cpu")
                else:
                    handle = os.open(file, os.O_RDONLY)
                self._handles[shard] = handle
            return handle

    # -- TensorSource ------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return self._label

    @property
    def config(self) -> Mapping[str, Any]:
        if self._config is None:
            file = self.path / "config.json"
            try:
                self._config = json.loads(file.read_text()) if file.is_file() else {}
            except json.JSONDecodeError as e:
                raise LosslessError(f"{file}: invalid JSON ({e})") from None
        return self._config

    def tensor_names(self) -> list[str]:
        return list(self._where)

    def _entry(self, name: str) -> dict[str, Any]:
        shard = self._where.get(name)
        if shard is None:
            raise LosslessError(f"{self._label}: has no tensor {name!r}")
        if self._pickle:
            t = self._open(shard)[name]
            dtype = TORCH_TO_SAFETENSORS[str(t.dtype).removeprefix("torch.")]
            return {"dtype": dtype, "shape": tuple(t.shape)}
        return self._headers[shard][name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)["shape"])

    def dtype(self, name: str) -> str:
        return str(self._entry(name)["dtype"])

    def get(self, name: str) -> torch.Tensor:
        self._entry(name)  # clear error for an unknown name
        shard = self._where[name]
        handle = self._open(shard)
        if self._pickle:
            tensor = handle[name]
        else:
            tensor = _pread_tensor(handle, self.path / shard, self._headers[shard][name])
        if not self._allow_non_finite:
            check_finite(tensor, f"{self._label}: tensor {name!r} ({self.path / shard})")
        return tensor

    @property
    def maps_bits(self) -> bool:
        """Whether `read_bits` can map its tensors (a safetensors checkpoint, not a pickle)."""
        return not self._pickle

    def read_bits(
        self, name: str, kinds: Mapping[str, Any], rows: tuple[int, int] | None = None
    ) -> np.ndarray | None:
        """The tensor's entries (or those of its rows [lo, hi) along the first dimension),
        flat, as numpy integers of the dtype's width (`kinds`: its safetensors dtype → that
        numpy type), with no torch; None for a pickle checkpoint or a dtype not in `kinds`.
        Not checked for NaN or Inf: the caller checks the result (methods/direct.py), and
        reads the tensor with `get` where it is not finite.

        A private map of the file's pages rather than a copy (`_map_entry`): the merge then
        reads the page cache itself, and both its copy and the fresh pages' faults are saved
        (0.3–0.8 s of a 336M merge's 2 s here). The map is gone with the array."""
        entry = self._entry(name)
        kind = kinds.get(entry["dtype"])
        if self._pickle or kind is None:
            return None
        shard = self._where[name]
        if rows is not None:
            entry = rows_entry(entry, *rows)
        return _map_entry(self._open(shard), self.path / shard, entry, kind)

    def get_rows(self, name: str, lo: int, hi: int) -> torch.Tensor | None:
        """Rows [lo, hi) of the tensor along its first dimension, reading only their bytes;
        None for a pickle checkpoint (read it whole)."""
        entry = self._entry(name)
        if self._pickle:
            return None
        shard = self._where[name]
        rows = _pread_tensor(self._open(shard), self.path / shard, rows_entry(entry, lo, hi))
        if not self._allow_non_finite:
            # rows [0, checked) were checked already: a streamed merge reads them again and
            # again (each pass of a magnitude cut), the check is made once
            checked = self._checked.get(name, 0)
            if hi > checked:
                first = max(0, checked - lo) if lo <= checked else 0
                check_finite(rows[first:], f"{self._label}: tensor {name!r} ({self.path / shard})")
                if lo <= checked:
                    self._checked[name] = hi
        return rows

    def close(self) -> None:
        """Close the shard descriptors (also done when the object is collected)."""
        with self._lock:
            for handle in self._handles.values():
                if isinstance(handle, int):
                    os.close(handle)
            self._handles.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def nbytes(self) -> int:
        """Total tensor bytes, for progress and I/O estimates."""
        return sum(
            math.prod(self.shape(n)) * DTYPE_BYTES[self.dtype(n)] for n in self.tensor_names()
        )


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Refuse NaN or Inf in a floating tensor: merged, it would spread into every output."""
    import torch

    if not tensor.is_floating_point() or tensor.numel() == 0:
        return
    # min and max are NaN if any entry is, ±inf if one is: one pass, no mask (15× faster than
    # isfinite().all() on bf16); the count below runs only for a tensor that fails
    if all(bool(torch.isfinite(bound)) for bound in torch.aminmax(tensor)):
        return
    finite = torch.isfinite(tensor)
    bad = int((~finite).sum())
    nan = int(torch.isnan(tensor).sum())
    raise LosslessError(
        f"{what} holds {bad} non-finite value(s) ({nan} NaN, {bad - nan} Inf) of {tensor.numel()}",
        hint="the checkpoint is corrupt or diverged; use another one, or pass "
        "--allow-non-finite to merge it anyway",
    )


def rows_entry(entry: Mapping[str, Any], lo: int, hi: int) -> dict[str, Any]:
    """A safetensors header entry narrowed to rows [lo, hi) of its first dimension."""
    shape = list(entry["shape"])
    row = math.prod(shape[1:]) * DTYPE_BYTES[entry["dtype"]]
    begin = entry["data_offsets"][0]
    return {
        **entry,
        "shape": [hi - lo, *shape[1:]],
        "data_offsets": [begin + lo * row, begin + hi * row],
    }


def _pread_tensor(fd: int, file: Path, entry: Mapping[str, Any]) -> torch.Tensor:
    """One tensor over `_map_entry`'s copy-on-write map of its bytes (or its copy of them),
    seen through the numpy integer type of the dtype's width. The map saves the copy out of
    the page cache and the fresh pages' faults: 1.1 of the 2.7 s of system time of a 336M
    TIES merge at density 0.5 here."""
    import numpy as np
    import torch

    dtype = getattr(torch, SAFETENSORS_TO_TORCH[entry["dtype"]])
    width = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}[dtype.itemsize]
    raw = torch.from_numpy(_map_entry(fd, file, entry, width))
    return raw.view(dtype).reshape(entry["shape"])


def _map_entry(fd: int, file: Path, entry: Mapping[str, Any], kind: Any) -> np.ndarray:
    """The tensor's bytes as a writable numpy array of `kind` over a copy-on-write map of the
    file (never written: nothing reaches the file), or read into a new one where the bytes do
    not start at a multiple of `kind`'s size (the kernels are compiled for aligned arrays) or
    the file cannot be mapped. The file is checked to hold them first; one cut short while
    mapped would end the process (SIGBUS), as with any memory map."""
    import mmap

    import numpy as np

    def copy() -> np.ndarray:
        bits = np.empty((stop - start) // np.dtype(kind).itemsize, dtype=kind)
        _pread_into(fd, file, entry, bits)
        return bits

    begin, end = entry["data_offsets"]
    start, stop = entry["data_start"] + begin, entry["data_start"] + end
    if stop == start or start % np.dtype(kind).itemsize:  # nothing, or not aligned: a copy
        return copy()
    if os.fstat(fd).st_size < stop:
        raise LosslessError(f"{file}: file ended while reading a tensor (truncated?)")
    first = start - start % mmap.ALLOCATIONGRANULARITY
    try:
        pages = mmap.mmap(
            fd,
            stop - first,
            flags=mmap.MAP_PRIVATE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=first,
        )
    except OSError:  # a file system that cannot map files, or no address space left
        return copy()
    return np.frombuffer(pages, dtype=kind, offset=start - first)


def _pread_into(fd: int, file: Path, entry: Mapping[str, Any], buffer: Any) -> None:
    """The tensor's bytes into `buffer` (a numpy array of exactly that many bytes)."""
    view = memoryview(buffer).cast("B")
    start = entry["data_start"] + entry["data_offsets"][0]
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], start + done)
        if got == 0:
            raise LosslessError(f"{file}: file ended while reading a tensor (truncated?)")
        done += got


def _weight_map(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LosslessError(f"{index}: invalid JSON ({e})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise LosslessError(f"{index}: no 'weight_map' object of tensor name → shard file")
    return weight_map
