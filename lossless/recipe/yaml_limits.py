"""Limits on what a YAML file may make us do, so a hostile recipe costs under a second and a few MB.

A recipe is a page of settings, so every limit is far above any real one:
    file size 256 KB · nesting 64 levels · 20,000 nodes after alias expansion (a "billion laughs"
    file of nested `*aliases` is 30 lines that expand to 10^9 nodes) · a scalar of 100,000
    characters (a long inline chat template is ~10,000) · an integer of 30 digits.
Each limit breached is a `Problem` with file:line:col, raised as `YamlLimit` from deep inside the
reader and turned into a problem once in `yaml_io.parse_documents`.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import yaml

from lossless.errors import Problem, blocking_part

MAX_FILE_BYTES = 256_000  # PyYAML's pure-Python scanner reads ~1 MB/s: this bounds its time
MAX_DEPTH = 64
MAX_NODES = 20_000
# PyYAML's scanner slows quadratically with open flow brackets (`[[[[...`): count them first.
_MAX_OPEN_BRACKETS = 1_000
MAX_SCALAR_CHARS = 100_000
MAX_INT_DIGITS = 30

_READ_HINTS = {
    errno.ENOENT: "check the path (is the recipe in another folder?)",
    errno.ENOTDIR: "a file stands where the path needs a folder: check the path",
    errno.EACCES: "the recipe is not readable by you: check its permissions",
    errno.EISDIR: "give the recipe file inside that folder, e.g. FOLDER/recipe.yaml",
}
_HINT = "recipes are small; this looks like a generated or hostile file (the limit is {limit})"


class YamlLimit(Exception):
    """A limit was passed at `mark` (a PyYAML mark, or None for the whole file)."""

    def __init__(self, message: str, mark: yaml.Mark | None, limit: str) -> None:
        super().__init__(message)
        self.message, self.mark, self.limit = message, mark, limit

    def problem(self, file: str, lines: list[str]) -> Problem:
        line, col = (self.mark.line + 1, self.mark.column + 1) if self.mark else (0, 0)
        shown = lines[line - 1][:120] if 0 < line <= len(lines) else None
        return Problem(
            self.message,
            file=file,
            line=line,
            col=col,
            source_line=shown,
            hint=_HINT.format(limit=self.limit),
            code="yaml-limit",
        )


class LimitedComposer:
    """Mixed into the loader: nesting depth and scalar length checked while composing, before
    PyYAML's recursive composer could overflow Python's stack."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR_CHARS:
            raise YamlLimit(
                f"a value of {len(event.value):,} characters is too long",
                event.start_mark,
                f"{MAX_SCALAR_CHARS:,} characters",
            )
        nests = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nests:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise YamlLimit(
                    f"lists and mappings nested more than {MAX_DEPTH} levels deep",
                    event.start_mark,
                    f"{MAX_DEPTH} levels",
                )
        try:
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            if nests:
                self._depth -= 1


class NodeBudget:
    """Counts nodes as aliases are expanded; raises past MAX_NODES or MAX_DEPTH (a cycle)."""

    def __init__(self) -> None:
        self.used = 0

    def spend(self, node: yaml.Node, depth: int) -> None:
        self.used += 1
        if self.used > MAX_NODES:
            raise YamlLimit(
                f"the recipe expands to more than {MAX_NODES:,} values (aliases `*name` repeat "
                "what their anchor `&name` holds)",
                node.start_mark,
                f"{MAX_NODES:,} values after alias expansion",
            )
        if depth > MAX_DEPTH:
            raise YamlLimit(
                f"aliases nest more than {MAX_DEPTH} levels deep (an anchor that holds itself?)",
                node.start_mark,
                f"{MAX_DEPTH} levels",
            )


def check_brackets(text: str) -> None:
    """Raise before PyYAML sees a file with more than `_MAX_OPEN_BRACKETS` unclosed `[`/`{`.
    Brackets inside strings are counted too, so the bound is far above MAX_DEPTH."""
    depth = 0
    for match in re.finditer(r"[\[\]{}]", text):
        depth += 1 if match.group() in "[{" else -1
        if depth > _MAX_OPEN_BRACKETS:
            line = text.count("\n", 0, match.start())
            col = match.start() - (text.rfind("\n", 0, match.start()) + 1)
            raise YamlLimit(
                f"more than {_MAX_OPEN_BRACKETS:,} `[` or `{{` open at once: lists and mappings "
                f"nested far beyond {MAX_DEPTH} levels",
                yaml.Mark("", match.start(), line, col, None, None),
                f"{MAX_DEPTH} levels",
            )


def check_integer(node: yaml.ScalarNode) -> None:
    digits = len(node.value.lstrip("+-").replace("_", ""))
    if digits > MAX_INT_DIGITS:
        raise YamlLimit(
            f"an integer of {digits:,} digits", node.start_mark, f"{MAX_INT_DIGITS} digits"
        )


def read_yaml_text(path: str | Path) -> tuple[str | None, Problem | None]:
    """The text of a YAML file, or the problem that stops it being read (too big, not UTF-8,
    unreadable). The size is checked before reading, so a 50 GB file costs nothing."""
    file = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            return None, Problem(
                f"the file is {size:,} bytes; a recipe may be at most {MAX_FILE_BYTES:,}",
                file=file,
                line=1,
                hint=_HINT.format(limit=f"{MAX_FILE_BYTES:,} bytes"),
                code="yaml-limit",
            )
        data = Path(path).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        blame = blocking_part(path, error.errno)
        return None, Problem(
            f"cannot read the recipe: {reason}" + (f" ({blame})" if blame else ""),
            file=file,
            hint=_READ_HINTS.get(error.errno or -1),
            code="io",
        )
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return None, Problem(
            f"not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start}",
            file=file,
            line=line,
            hint="save the file as UTF-8 (is it a binary file?)",
            code="io",
        )
