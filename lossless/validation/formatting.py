"""Problems → text for a person, JSON for tools, or GitHub Actions workflow annotations.

Text looks like (dvc / rustc style):

    recipe.yaml:5:1  merge_methd
      error: unknown key `merge_methd`
        5 | merge_methd: ties
          | ^
      hint: did you mean `merge_method`?
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from lossless.errors import Problem, format_yaml_path

Format = Literal["text", "json", "github"]


def _text(p: Problem) -> str:
    head = p.location + (f"  {format_yaml_path(p.path)}" if p.path else "")
    out = [head, f"  {p.severity}: {p.message}"]
    if p.source_line is not None and p.line:
        gutter = str(p.line)
        line = p.source_line.replace("\t", " ")
        out.append(f"    {gutter} | {line}")
        out.append(f"    {' ' * len(gutter)} | {' ' * max(p.col - 1, 0)}^")
    if p.expected is not None:
        out.append(f"  expected: {p.expected}")
    if p.got is not None:
        out.append(f"  got: {p.got}")
    if p.hint:
        out.append(f"  hint: {p.hint}")
    return "\n".join(out)


def _summary(problems: Sequence[Problem]) -> str:
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    return f"{errors} error(s), {warnings} warning(s)"


def _github_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _github(p: Problem) -> str:
    level = "error" if p.severity == "error" else "warning"
    props = [f"file={_github_escape(p.file, True)}"] if p.file else []
    if p.line:
        props.append(f"line={p.line}")
        if p.col:
            props.append(f"col={p.col}")
    props.append("title=" + _github_escape(f"lossless {p.code}", True))
    message = p.message
    if p.path:
        message = f"{format_yaml_path(p.path)}: {message}"
    if p.expected is not None:
        message += f" (expected {p.expected}"
        message += f", got {p.got})" if p.got is not None else ")"
    if p.hint:
        message += f"\nhint: {p.hint}"
    return f"::{level} {','.join(props)}::{_github_escape(message)}"


def problem_dict(p: Problem) -> dict[str, object]:
    return {
        "file": p.file,
        "line": p.line,
        "col": p.col,
        "path": format_yaml_path(p.path) if p.path else "",
        "severity": p.severity,
        "code": p.code,
        "message": p.message,
        "expected": p.expected,
        "got": p.got,
        "hint": p.hint,
    }


def render_problems(problems: Sequence[Problem], fmt: Format = "text") -> str:
    """All problems in one string (text ends with a summary line; empty input → "")."""
    if fmt == "json":
        return json.dumps([problem_dict(p) for p in problems], indent=2)
    if fmt == "github":
        return "\n".join(_github(p) for p in problems)
    if not problems:
        return ""
    return "\n\n".join(_text(p) for p in problems) + "\n\n" + _summary(problems)
