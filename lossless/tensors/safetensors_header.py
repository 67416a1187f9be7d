"""safetensors headers, validated by hand before any tensor is read.

A corrupt or hostile file (a 2^60-byte header length, offsets past the end, an unknown dtype)
fails here with a message naming the file and the defect, instead of a crash or a huge
allocation in the reader. The dtype tables map between safetensors' and torch's spellings.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

# Real headers are ~100 KB for a 70B model; anything near this bound is corrupt or hostile.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype spelling → bytes per element.
DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

TORCH_TO_SAFETENSORS = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "float16": "F16",
    "bfloat16": "BF16",
    "int32": "I32",
    "float32": "F32",
    "int64": "I64",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
SAFETENSORS_TO_TORCH = {v: k for k, v in TORCH_TO_SAFETENSORS.items()} | {
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
}


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The validated tensor entries of a safetensors file: name → {dtype, shape, data_offsets}.

    Checks: the 8-byte length is sane and inside the file; the header is a JSON object; every
    entry has a known dtype, a shape of non-negative ints and offsets whose span equals
    shape × dtype size and lies inside the data region.
    """

    def bad(what: str) -> LosslessError:
        return LosslessError(
            f"{path}: not a valid safetensors file: {what}",
            hint="the file is corrupt or truncated; download or re-save it",
        )

    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise bad(f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit")
        if 8 + header_len > size:
            raise bad(f"header length {header_len} runs past the end of the {size}-byte file")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_len = size - 8 - header_len
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise bad(f"entry {name!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise bad(f"tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise bad(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise bad(
                f"tensor {name!r} data_offsets [{begin}, {end}] lie outside the "
                f"{data_len}-byte data region"
            )
        expected = math.prod(shape) * DTYPE_BYTES[dtype]
        if end - begin != expected:
            raise bad(
                f"tensor {name!r} spans {end - begin} bytes but shape {shape} of {dtype} "
                f"needs {expected}"
            )
        entries[name] = {
            "dtype": dtype,
            "shape": tuple(shape),
            "data_offsets": (begin, end),
            "data_start": 8 + header_len,  # absolute file offset of the data region
        }
    # safetensors' own rule: the tensors tile the data region, in some order, with no overlap
    # and no gap; two tensors sharing bytes would let one write show up in both.
    expected, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda item: item[1]["data_offsets"]):
        begin, end = entry["data_offsets"]
        if begin < expected:
            raise bad(
                f"tensors {previous!r} and {name!r} overlap ({previous!r} ends at byte "
                f"{expected}, {name!r} starts at {begin})"
            )
        if begin > expected:
            raise bad(f"{begin - expected} unused bytes before tensor {name!r} (at {expected})")
        expected, previous = end, name
    if expected != data_len:
        raise bad(f"{data_len - expected} bytes after the last tensor belong to none")
    return entries


# config.json keys and the tensor dimension each must equal: (key, tensor name ends, axis).
