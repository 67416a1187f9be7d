"""Whether the compiled tie-order replay picks what this torch's argsort picks, remembered per
torch installation, so that a merge which needs no torch need not import it to ask.

sort_replay.replay_agrees() checks the replay against torch.argsort on tie-heavy keys once per
process; that needs torch, whose import (1.4 s here) the merges without torch save
(methods/direct.py). Its answer depends only on torch's build (its C++ sort) and on the
replay's code, so it is kept in `$LOSSLESS_CACHE` (default `~/.cache/lossless`)/`replay.json`
under the torch version, the size and mtime of its CPU library, and those of the replay's two
modules; any change asks again. A cache that cannot be written only costs the check next time.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
from pathlib import Path

from lossless.cache import cache_dir, write_json


def _stamp(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "-"
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def installation_key() -> str | None:
    """What the answer depends on, without importing torch; None where torch is absent."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    torch_dir = Path(spec.origin).parent
    library = next(iter(sorted((torch_dir / "lib").glob("libtorch_cpu.*"))), torch_dir)
    here = Path(__file__).parent
    parts = [
        importlib.metadata.version("torch"),
        _stamp(library),
        _stamp(here / "sort_replay.py"),
        _stamp(here / "sort_replay_kernel.py"),
    ]
    return "|".join(parts)


def _path() -> Path:
    return cache_dir() / "replay.json"


def _remembered() -> dict[str, bool]:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, bool)} if isinstance(data, dict) else {}


@functools.cache
def replay_trusted() -> bool:
    """sort_replay.replay_agrees(), from the cache when this installation was checked before."""
    key = installation_key()
    known = _remembered()
    if key is not None and key in known:
        return known[key]
    from lossless.methods import sort_replay

    agrees = sort_replay.replay_agrees()
    if key is not None:
        write_json(_path(), {**_remembered(), key: agrees})
    return agrees
