"""One run at a time per work dir and per output: an advisory lock file beside each.

`<work dir>/.run.lock` and `.<output>.lock` beside a final output outside the work dir hold
the pid, start time and command of the run that has them (flock, so the kernel lets go when that
process dies, even by SIGKILL). A second run says who holds a lock and fails (exit 1), or waits
with `--wait`. A lock file left by a dead run is taken over with a note.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from lossless.errors import LosslessError

WORK_DIR_LOCK = ".run.lock"
_POLL_SECONDS = 0.2


def lock_path_for(directory: Path, *, work_dir: bool) -> Path:
    """`.lossless/.run.lock` for the work dir; `out/.merged.lock` for an output `out/merged`."""
    return directory / WORK_DIR_LOCK if work_dir else directory.parent / f".{directory.name}.lock"


def _holder(fd: int) -> dict[str, object]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        found = json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "another process"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} "
        f"({holder.get('command')})"
    )


def _acquire(path: Path, wait: bool, say: Callable[[str], None]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if not wait:
                raise LosslessError(
                    f"another lossless run holds {path}: {_describe(holder)}",
                    hint="wait for it to finish, or pass --wait to queue behind it",
                ) from None
            if not waited:
                say(f"waiting for the run that holds {path}: {_describe(holder)}")
                waited = True
            time.sleep(_POLL_SECONDS)
            continue
        try:  # a run that just finished unlinks its lock file: ours must still be the one there
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = _holder(fd)
        if previous:
            say(f"note: took over the lock {path} left by {_describe(previous)}, no longer running")
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(["lossless", *sys.argv[1:]]),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(mine).encode())
        return fd


def _release(path: Path, fd: int) -> None:
    path.unlink(missing_ok=True)  # while still holding it: no one locks a file about to vanish
    os.close(fd)


@contextmanager
def run_locks(
    paths: Sequence[Path], *, wait: bool = False, say: Callable[[str], None] = print
) -> Iterator[None]:
    """Hold every lock in `paths` (taken in sorted order, so two waiting runs cannot deadlock)."""
    with ExitStack() as stack:
        for path in sorted(set(paths)):
            fd = _acquire(path, wait, say)
            stack.callback(_release, path, fd)
        yield
