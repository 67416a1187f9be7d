"""Which trainer checkpoint to resume from: the newest *complete* one; torn ones are removed.

A kill while transformers' Trainer saves `checkpoint-300` leaves a directory it cannot load
("Can't find a valid checkpoint"), and every rerun used to fail on it. Trainer writes
`trainer_state.json` last (after the weights, optimizer, scheduler and RNG state), so a checkpoint
counts as complete when that file parses and every weight and state file in it is whole:
a safetensors file's header and data add up to its size; a torch `.pt/.pth/.bin` file (a zip)
has its central directory, which is written at its end.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

TRAINER_STATE = "trainer_state.json"
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _safetensors_whole(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return path.stat().st_size == 8 + length + max(ends, default=0)


def torn_reason(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it is complete."""
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return f"no {TRAINER_STATE}: the save was interrupted"
    except (OSError, ValueError):
        return f"{TRAINER_STATE} is not readable JSON"
    if not any((checkpoint / name).is_file() for name in _WEIGHTS):
        return "no weights"
    for path in sorted(checkpoint.iterdir()):
        if path.suffix == ".safetensors" and not _safetensors_whole(path):
            return f"{path.name} is cut short"
        if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
            return f"{path.name} is cut short"
    return None


def newest_complete(
    checkpoints: Path, note: Callable[[str], None] = _note, *, quiet: bool = False
) -> Path | None:
    """`checkpoints/checkpoint-N` with the largest N that is complete; newer torn ones are
    deleted (lossless wrote them, in its partial dir) with a note each, unless `quiet`."""
    if not checkpoints.is_dir():
        return None
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for candidate in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        why = torn_reason(candidate)
        if why is None:
            return candidate
        if not quiet:
            older = "resuming from an older one"
            note(f"discarded the torn checkpoint {candidate.name} ({why}); {older}")
        shutil.rmtree(candidate, ignore_errors=True)
    return None
