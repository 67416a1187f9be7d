"""YAML text → plain data plus the (line, column) of every node, without PyYAML's silent traps.

PyYAML on its own reads `1e-4` as a *string* (YAML 1.1 wants `1.0e-4`), keeps the last of two
duplicate keys without a word, builds Python objects from `!!python/object` tags with the unsafe
loader, and reports a tab or a pasted em-dash bullet with a message nobody understands. Here we only
*compose* the node tree (no construction), convert it ourselves, and turn each trap into a `Problem`
that names the line and column.

Positions are 1-based. For a mapping entry, `positions[path]` is where the *key* is written (an
unknown-key error points at the key); `positions.value_starts[path]` is where the value starts (a
wrong-value error points at the value).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lossless.errors import Problem, RecipeInvalid, YamlPath
from lossless.recipe.yaml_limits import (
    LimitedComposer,
    NodeBudget,
    YamlLimit,
    check_brackets,
    check_integer,
    read_yaml_text,
)

# YAML 1.2 floats: `1e-4`, `2E5`, `.5`, `-3.0e+2`. PyYAML's 1.1 pattern needs a dot and a signed
# exponent, so `learning_rate: 2e-5` would silently become the string "2e-5".
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)

_STR, _INT, _FLOAT = "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_BOOL, _NULL = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_PLAIN_SCALARS = {_STR, _INT, _FLOAT, _BOOL, _NULL, "tag:yaml.org,2002:timestamp"}

# Dashes that look like a list bullet but are not one (pasted from blogs and chat apps).
_FAKE_BULLETS = {
    "\u2014": "em-dash",
    "\u2013": "en-dash",
    "\u2212": "minus sign",
    "\u2022": "bullet",
}


class _Loader(LimitedComposer, yaml.SafeLoader):
    """SafeLoader whose resolver knows YAML 1.2 floats, within `yaml_limits`."""


_Loader.yaml_implicit_resolvers = {
    key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT, _FLOAT_12, list("-+0123456789."))


_NUMBERS = yaml.constructor.SafeConstructor()


class Positions(dict[YamlPath, tuple[int, int]]):
    """YAML path → (line, col) of the key (or list item); `.value_starts` → where the value starts."""

    def __init__(self) -> None:
        super().__init__()
        self.value_starts: dict[YamlPath, tuple[int, int]] = {}

    def value_at(self, path: YamlPath) -> tuple[int, int]:
        """Where the value at `path` starts, falling back to its key, then to its nearest parent."""
        for p in (path[:i] for i in range(len(path), -1, -1)):
            if p in self.value_starts:
                return self.value_starts[p]
            if p in self:
                return self[p]
        return (0, 0)

    def key_at(self, path: YamlPath) -> tuple[int, int]:
        for p in (path[:i] for i in range(len(path), -1, -1)):
            if p in self:
                return self[p]
            if p in self.value_starts:
                return self.value_starts[p]
        return (0, 0)


Document = tuple[Any, Positions]


def source_line(lines: list[str], line: int) -> str | None:
    return lines[line - 1] if 0 < line <= len(lines) else None


class _Converter:
    """Walks a composed node tree into plain data, recording positions and problems."""

    def __init__(self, file: str, lines: list[str]) -> None:
        self.file, self.lines = file, lines
        self.problems: list[Problem] = []
        self.budget = NodeBudget()

    def problem(self, node: yaml.Node, path: YamlPath, message: str, **kw: Any) -> None:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        self.problems.append(
            Problem(
                message,
                file=self.file,
                path=path,
                line=line,
                col=col,
                source_line=source_line(self.lines, line),
                **kw,
            )
        )

    def convert(self, node: yaml.Node, path: YamlPath, pos: Positions) -> Any:
        self.budget.spend(node, len(path))
        pos.value_starts[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, pos)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._bad_tag(node, path)
            items = []
            for i, item in enumerate(node.value):
                pos[(*path, i)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                items.append(self.convert(item, (*path, i), pos))
            return items
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: YamlPath, pos: Positions) -> dict[str, Any]:
        if node.tag != _MAP:
            self._bad_tag(node, path)
        out: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`
                merged = self.convert(value_node, path, Positions())
                for item in merged if isinstance(merged, list) else [merged]:
                    if isinstance(item, dict):
                        for k, v in item.items():
                            out.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key must be a plain word", code="yaml-key")
                continue
            key = key_node.value
            key_line = key_node.start_mark.line + 1
            if key in first_seen:
                self.problem(
                    key_node,
                    (*path, key),
                    f"duplicate key `{key}` (first written on line {first_seen[key]})",
                    hint="YAML keeps only the last value; delete or merge one of them",
                    code="duplicate-key",
                )
                continue
            first_seen[key] = key_line
            pos[(*path, key)] = (key_line, key_node.start_mark.column + 1)
            out[key] = self.convert(value_node, (*path, key), pos)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: YamlPath) -> Any:
        tag, text = node.tag, node.value
        if tag not in _PLAIN_SCALARS:
            self._bad_tag(node, path)
            return text
        if tag == _STR or tag == "tag:yaml.org,2002:timestamp":
            return text
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return text.lower() in ("yes", "true", "on", "y")
        if tag == _INT:
            check_integer(node)
            return _NUMBERS.construct_yaml_int(node)  # 0x1F, 1_000, 0o17 as PyYAML reads them
        return _NUMBERS.construct_yaml_float(node)

    def _bad_tag(self, node: yaml.Node, path: YamlPath) -> None:
        self.problem(
            node,
            path,
            f"YAML tag `{node.tag.replace('tag:yaml.org,2002:', '!!')}` is not allowed",
            hint="recipes are plain data: remove the tag (lossless never constructs objects from YAML)",
            code="yaml-tag",
        )


def _lexical_problems(text: str, file: str) -> list[Problem]:
    """Tabs in indentation and fake bullets: caught before PyYAML gives an obscure message."""
    problems: list[Problem] = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if stripped.startswith("\t"):
            problems.append(
                Problem(
                    "a tab is used for indentation; YAML allows only spaces",
                    file=file,
                    line=number,
                    col=indent + 1,
                    source_line=line,
                    hint="replace the tab with spaces (configure your editor to insert spaces)",
                    code="yaml-tab",
                )
            )
            continue
        first = stripped[:1]
        if first in _FAKE_BULLETS and stripped[1:2] in (" ", ""):
            problems.append(
                Problem(
                    f"line starts with an {_FAKE_BULLETS[first]} `{first}`, not a YAML list "
                    "bullet `-`",
                    file=file,
                    line=number,
                    col=indent + 1,
                    source_line=line,
                    expected="`- ` (ASCII hyphen-minus and a space)",
                    got=f"`{first}` (U+{ord(first):04X})",
                    hint="this usually comes from copying a recipe out of a blog post; type `-`",
                    code="yaml-fake-bullet",
                )
            )
    return problems


def _syntax_problem(error: yaml.YAMLError, file: str, lines: list[str]) -> Problem:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    what = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None) or ""
    message = f"YAML syntax error: {what}" + (f" ({context})" if context else "")
    hint = None
    opened = getattr(error, "context_mark", None)
    if context.startswith("while parsing a flow") and opened is not None:
        # Point at the bracket that was never closed, not at the line where PyYAML gave up.
        bracket = "[" if "sequence" in context else "{"
        message = f"`{bracket}` opened here is never closed (YAML parser on line {line}: {what})"
        line, col = opened.line + 1, opened.column + 1
        hint = f"close it with `{']' if bracket == '[' else '}'}` or check for a missing comma"
    elif context.startswith("while scanning a quoted scalar") and opened is not None:
        message = f"a quoted string opened here is never closed (YAML parser: {what})"
        line, col = opened.line + 1, opened.column + 1
        hint = "add the closing quote"
    elif "mapping values are not allowed" in what:
        hint = "a `key: value` line is indented under a plain value; check indentation and quoting"
    elif "could not find expected ':'" in what:
        hint = "a key is missing its `:`, or a quoted string is not closed"
    return Problem(
        message,
        file=file,
        line=line,
        col=col,
        source_line=source_line(lines, line),
        hint=hint,
        code="yaml-syntax",
    )


def parse_documents(text: str, file: str = "") -> tuple[list[Document], list[Problem]]:
    """Every document of `text` as (data, positions), and every problem met while reading it.

    Empty documents (a lone `---`) are dropped. On a syntax error no documents are returned.
    """
    lines = text.splitlines()
    problems = _lexical_problems(text, file)
    if problems:  # PyYAML would stop at the first one with a less helpful message
        return [], problems
    converter = _Converter(file, lines)
    documents: list[Document] = []
    try:
        check_brackets(text)
        nodes = list(yaml.compose_all(text, Loader=_Loader))
        for node in nodes:
            if node is None or (node.tag == _NULL and node.value == ""):  # a lone trailing `---`
                continue
            positions = Positions()
            documents.append((converter.convert(node, (), positions), positions))
    except yaml.YAMLError as error:
        return [], [_syntax_problem(error, file, lines)]
    except YamlLimit as limit:
        return [], [limit.problem(file, lines)]
    return documents, converter.problems


def load_documents(path: str | Path) -> list[Document]:
    """Read a YAML file safely; raises `RecipeInvalid` listing every reading problem."""
    file = str(path)
    text, unreadable = read_yaml_text(path)
    if text is None:
        raise RecipeInvalid([unreadable] if unreadable else [])
    documents, problems = parse_documents(text, file)
    if problems:
        raise RecipeInvalid(problems)
    return documents
