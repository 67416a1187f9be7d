"""Provenance hashes: a step is fresh when its fingerprint equals the one recorded with its output.

A fingerprint is a sha256 over named components: the step's own settings, the fingerprints of the
steps it reads, and the identity of every external input (content hashes of local files, headers
and sizes of safetensors checkpoints, resolved hub commits). Components are kept by name so
`lossless plan` can say *what* changed, not just that something did.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossless.tensors.writer import sha256_file

# Bump when the meaning of a step's output changes (new math, new layout): every step reruns.
FINGERPRINT_VERSION = 1

# Files of a model directory that define what a step reads. Weights are identified by their
# safetensors header (names, dtypes, shapes, offsets), size, modification time and a sample of
# their bytes, not hashed in full: hashing 15 GB on every `plan` would take minutes. Two
# fine-tunes of one architecture have identical headers, so the header alone is not enough.
_CONTENT_HASHED = (
    ".json",
    ".txt",
    ".model",
    ".jinja",
    ".yaml",
    ".yml",
    ".jsonl",
    ".csv",
    ".parquet",
    ".py",  # an lm-eval task folder's `!function` code (and remote modelling code)
)


SAMPLE_STRIPES = 16  # × 64 KiB read from evenly spaced offsets of each weights file
STRIPE = 64 << 10


def _safetensors_identity(path: Path) -> str:
    """sha256 of the header, the size, the mtime and 16 evenly spaced 64 KiB stripes."""
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        digest.update(handle.read(min(length, 100 << 20)))
        for i in range(SAMPLE_STRIPES):
            handle.seek(stat.st_size * i // SAMPLE_STRIPES)
            digest.update(handle.read(STRIPE))
    return digest.hexdigest()


def path_identity(path: Path) -> str:
    """A content identity for a local file or directory (see module docstring)."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".safetensors":
            return _safetensors_identity(path)
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or rel.startswith("checkpoints/"):
            continue  # caches, partial checkpoints and hidden files are not part of the model
        if file.suffix == ".safetensors":
            part = _safetensors_identity(file)
        elif file.suffix in _CONTENT_HASHED:
            part = sha256_file(file)
        else:
            part = str(file.stat().st_size)
        digest.update(f"{rel}\0{part}\n".encode())
    return digest.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Dataclasses, mappings, tuples → plain JSON data with stable key order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def digest(value: Any) -> str:
    text = json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """The named parts of a step's provenance and their combined hash."""

    components: Mapping[str, str]

    @property
    def value(self) -> str:
        return digest({"version": FINGERPRINT_VERSION, **dict(self.components)})

    def changes_from(self, recorded: Mapping[str, str]) -> list[str]:
        """Human-readable differences against components recorded by an earlier run."""
        changes = []
        for key in sorted(set(self.components) | set(recorded)):
            if key not in recorded:
                changes.append(f"{key}: new")
            elif key not in self.components:
                changes.append(f"{key}: removed")
            elif recorded[key] != self.components[key]:
                changes.append(f"{key}: changed")
        return changes
