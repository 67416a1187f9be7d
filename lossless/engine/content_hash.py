"""sha256 of local files, remembered by (path, size, mtime) so a rerun does not read 100 GB again.

`RECIPE.lock` identifies local weights by their content: two fine-tunes of one architecture
have identical safetensors headers, so a header hash cannot tell them apart, and a model
retrained in place must not look "up to date". Hashing is a full read, once per file version:
the result is kept in `$LOSSLESS_CACHE` (default `~/.cache/lossless`)/`sha256.json`, keyed by the
resolved path and invalidated by any change of size or modification time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lossless.cache import cache_dir, write_json
from lossless.tensors.writer import sha256_file


def cache_file() -> Path:
    return cache_dir() / "sha256.json"


def _load() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(data: dict[str, dict[str, object]]) -> None:
    write_json(cache_file(), data)  # a read-only home only costs a rehash next time


def cached_sha256(path: Path) -> str:
    """The file's sha256, read from the cache when its size and mtime are unchanged."""
    resolved = str(Path(path).resolve())
    stat = os.stat(resolved)
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = _load()
    entry = cache.get(resolved)
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in key.items()):
        return str(entry["sha256"])
    digest = sha256_file(Path(resolved))
    cache = _load()  # another process may have added entries meanwhile
    cache[resolved] = {**key, "sha256": digest}
    _save(cache)
    return digest
