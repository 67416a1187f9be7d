"""Problems found in a recipe, and how they are shown to a person or a CI system.

A `Problem` says where (file, YAML path, line, column), what is wrong, what was expected, and how
to fix it. Validation collects every problem before reporting, so one run shows them all.
`LosslessError` is raised for a failed run (a missing file, a shape mismatch): the CLI prints it
without a traceback (`--debug` shows one).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]
YamlPath = tuple[str | int, ...]


def format_yaml_path(path: YamlPath) -> str:
    """`("models", 0, "parameters", "weight")` → `models[0].parameters.weight`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(document)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe. Lines and columns are 1-based; 0 means unknown."""

    message: str
    file: str = ""
    path: YamlPath = ()
    line: int = 0
    col: int = 0
    severity: Severity = "error"
    expected: str | None = None
    got: str | None = None
    hint: str | None = None
    source_line: str | None = None  # the offending line of the file, shown with a caret
    code: str = "invalid"  # a short stable identifier, e.g. "unknown-key", "yaml-syntax"

    @property
    def location(self) -> str:
        where = self.file or "<recipe>"
        if self.line:
            where += f":{self.line}"
            if self.col:
                where += f":{self.col}"
        return where


# Exit codes, mapped from errors in one place (`cli.main`).
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class LosslessError(Exception):
    """A run failed for a reason the user can act on. Printed without a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


@dataclass
class RecipeInvalid(Exception):
    """Raised when a recipe has errors; carries every problem found (warnings too)."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        errors = [p for p in self.problems if p.severity == "error"]
        return f"recipe has {len(errors)} error(s)"


class UsageError(LosslessError):
    """The input itself is unusable (a recipe argument that names nothing readable): exit 2."""

    exit_code = EXIT_INVALID


class GateFailed(LosslessError):
    """An eval gate was breached: the run fails with exit code 1 (CI refuses the merge)."""


def blocking_part(path: str | Path, code: int | None) -> str:
    """Which part of `path` stops it being opened, for the OS's bare "Not a directory" and
    "No such file or directory": the file that stands where a directory must, or the first
    folder that does not exist. Empty for other errors, or when only the last part is missing
    (the message's path says that already)."""
    if code not in (errno.ENOTDIR, errno.ENOENT):
        return ""
    for part in reversed(Path(path).parents):
        if code == errno.ENOTDIR and part.exists() and not part.is_dir():
            return f"{part} is a file, not a directory"
        if code == errno.ENOENT and not part.exists():
            return f"{part} does not exist"
    return ""
