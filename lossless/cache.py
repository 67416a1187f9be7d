"""Where lossless keeps what it remembers between runs: `$LOSSLESS_CACHE`, else
`$XDG_CACHE_HOME/lossless`, else `~/.cache/lossless`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    return Path(
        os.environ.get("LOSSLESS_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lossless")
    )


def write_json(target: Path, data: Any) -> None:
    """`data` into `target` atomically (a temporary file renamed over it); a cache that cannot
    be written is skipped: it only costs the work again next time."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, target)
    except OSError:
        pass
