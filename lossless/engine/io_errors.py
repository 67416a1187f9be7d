"""OS errors as messages a person can act on: which path, what happened, what to do.

`cli.main` turns any OSError that reaches it into one of these (exit 1), so a full disk, a
permission problem or a name too long never shows a traceback. The runner adds what it knows
(the step, how much room the step needs) with `disk_full`; data files are checked for UTF-8
before a step reads them (`check_text_files`), so binary bytes name the file and offset.
"""

from __future__ import annotations

import codecs
import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from lossless.errors import LosslessError, blocking_part

_TEXT_SUFFIXES = {".jsonl", ".json", ".txt", ".csv", ".tsv", ".md", ".yaml", ".yml", ".jinja"}
_WHAT_TO_DO = {
    errno.EACCES: "check the permissions of that path, or choose another with --work-dir / OUT",
    errno.EPERM: "check the permissions of that path, or choose another with --work-dir / OUT",
    errno.EROFS: "the filesystem is read-only: choose a writable --work-dir / OUT",
    errno.ENAMETOOLONG: "a path component is longer than the filesystem allows: use a shorter name",
    errno.ENOENT: "check that the path exists",
    errno.ENOTDIR: "a file stands where the path needs a directory: check the path",
    errno.EMFILE: "too many open files: raise the limit (`ulimit -n 4096`) and rerun",
}


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{n} B"


def free_bytes(path: Path) -> int | None:
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def disk_full(where: Path, needed: int | None = None, step: str | None = None) -> LosslessError:
    free = free_bytes(where)
    who = f"step `{step}` " if step else ""
    need = f"; it needs about {human(needed)} there" if needed else ""
    have = f", {human(free)} is free" if free is not None else ""
    return LosslessError(
        f"no space left on the disk holding {where}: {who}could not finish writing{need}{have}",
        hint="free some space (or point --work-dir / OUT at a larger disk) and rerun: "
        "finished shards and checkpoints are kept and resumed from",
    )


def from_os_error(error: OSError) -> LosslessError:
    """Any OSError as a LosslessError that names its path(s) and what to do."""
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    if error.errno == errno.ENOSPC:
        return disk_full(Path(os.fsdecode(paths[0])) if paths else Path.cwd())
    where = " → ".join(_short(os.fsdecode(p)) for p in paths) or "(no path given by the OS)"
    reason = error.strerror or type(error).__name__
    blame = blocking_part(os.fsdecode(paths[0]), error.errno) if len(paths) == 1 else ""
    if blame:
        where += f" ({_short(blame)})"
    hint = _WHAT_TO_DO.get(error.errno or -1, "check the path, then rerun")
    return LosslessError(f"{reason}: {where}", hint=hint)


def _short(path: str) -> str:
    return path if len(path) <= 300 else path[:150] + f"...({len(path):,} characters)"


def check_text_files(paths: Iterable[Path]) -> None:
    """Raise naming the file, line and byte offset of the first byte that is not UTF-8."""
    for path in paths:
        if path.suffix.lower() not in _TEXT_SUFFIXES or not path.is_file():
            continue
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset, line = 0, 1
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as bad:
                    at = offset + bad.start
                    line += chunk[: bad.start].count(b"\n")
                    raise LosslessError(
                        f"{path}:{line}: not UTF-8 text (byte 0x{chunk[bad.start]:02x} at offset "
                        f"{at:,})",
                        hint="data files are read as UTF-8 text: re-save it as UTF-8, or check it "
                        "is the file you meant (not a binary)",
                    ) from None
                offset += len(chunk)
                line += chunk.count(b"\n")
