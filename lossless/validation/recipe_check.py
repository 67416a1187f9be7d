"""Recipe file → (Recipe, warnings), or `RecipeInvalid` with every problem found at once.

Order: read YAML (syntax, duplicate keys, tags) → JSON Schema pass per document → semantic pass
(methods, parameters, references, cycles) → build the frozen Recipe. The schema and semantic
passes both always run, so a user fixes everything in one round.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import Problem, RecipeInvalid
from lossless.recipe.build import build_recipe
from lossless.recipe.model import Recipe
from lossless.recipe.references import did_you_mean
from lossless.recipe.schema import validator
from lossless.recipe.yaml_io import Positions, parse_documents, source_line
from lossless.recipe.yaml_limits import read_yaml_text
from lossless.validation.semantic import Checker, check_documents

if TYPE_CHECKING:
    from lossless.recipe.overrides import Override


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _meant(error: Any) -> list[Any]:
    """The errors of an anyOf/oneOf's branches that failed on more than their type (or on a
    value inside the instance); a nested one counts when it has such errors itself
    (`data: [{path: a, weight: 0}]` → the weight)."""
    meant = []
    depth = len(error.absolute_path)
    for e in error.context:
        if e.validator in ("anyOf", "oneOf"):
            if _meant(e):
                meant.append(e)
        elif e.validator not in ("type", "const") or len(e.absolute_path) > depth:
            meant.append(e)
    return meant


def _schema_problem(error: Any, file: str, lines: list[str], pos: Positions) -> list[Problem]:
    """One jsonschema error → Problems with the location and an expected/got/hint."""
    path = tuple(error.absolute_path)
    kind, schema = error.validator, error.schema

    def make(message: str, at: tuple, *, key: bool = False, **kw: Any) -> Problem:
        line, col = pos.key_at(at) if key else pos.value_at(at)
        return Problem(
            message,
            file=file,
            path=at,
            line=line,
            col=col,
            source_line=source_line(lines, line),
            **kw,
        )

    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        out = []
        for k in extra:
            close = did_you_mean(k, allowed)
            out.append(
                make(
                    f"unknown key `{k}`",
                    (*path, k),
                    key=True,
                    code="unknown-key",
                    expected=None if close else "one of: " + ", ".join(allowed),
                    hint=close or "remove it (unknown keys are errors, not ignored)",
                )
            )
        return out
    if kind == "enum":
        choices = [str(c) for c in error.validator_value]
        what = "merge method" if path[-1:] == ("merge_method",) else "value"
        return [
            make(
                f"unknown {what} {_short(error.instance)}",
                path,
                code="unknown-value",
                expected=", ".join(choices),
                got=_short(error.instance),
                hint=did_you_mean(str(error.instance), choices),
            )
        ]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [make(f"missing required key `{missing}`", path, key=True, code="missing-key")]
    if kind == "dependencies":  # draft-07's form of "this key needs that key"
        return [
            make(
                "a merge stage needs `merge_method`",
                path,
                code="missing-key",
                hint="add `merge_method: linear` (or ties, slerp, ...)",
            )
        ]
    if kind in ("anyOf", "oneOf"):
        # A branch that failed on more than its type is the one the user meant: report its errors
        # (e.g. `{value: 1, filtr: mlp}` → unknown key `filtr`), not "matches no alternative".
        meant = _meant(error)
        if meant and len({e.schema_path[0] for e in meant}) == 1:
            return [p for e in meant for p in _schema_problem(e, file, lines, pos)]
        return [
            make(
                f"`{path[-1] if path else 'document'}` has the wrong shape",
                path,
                code="wrong-type",
                expected=schema.get("description"),
                got=_short(error.instance),
            )
        ]
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [
            make(
                f"wrong type: expected {expected}",
                path,
                code="wrong-type",
                expected=str(expected),
                got=_short(error.instance),
            )
        ]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return [
            make(
                f"value out of range ({kind} {error.validator_value})",
                path,
                code="out-of-range",
                expected=f"{kind} {error.validator_value}",
                got=_short(error.instance),
            )
        ]
    if (kind == "pattern" and path[-1:] == ("name",)) or kind == "propertyNames":
        return [
            make(
                "a step name may hold only letters, digits, `_`, `-` and `.`",
                path,
                code="bad-name",
                got=_short(error.instance),
            )
        ]
    if kind == "pattern":
        return [
            make(
                f"`{path[-1] if path else 'document'}` does not have the expected form",
                path,
                code="wrong-form",
                expected=schema.get("description"),
                got=_short(error.instance),
            )
        ]
    return [make(error.message, path, code="schema")]


def schema_problems(data: Any, file: str, lines: list[str], pos: Positions) -> list[Problem]:
    problems: list[Problem] = []
    errors = sorted(validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        problems += _schema_problem(error, file, lines, pos)
    return problems


def check_text(
    text: str,
    file: str = "",
    *,
    recipe_dir: str | Path | None = None,
    resolve: bool = False,
    overwrite: bool = False,
    check_output: bool = True,
    overrides: Sequence[Override] = (),
    allow_crimes: bool = False,
) -> tuple[list[Any], list[Problem]]:
    """Every problem of a recipe's text (errors and warnings), and its documents as data.

    `overwrite` (the `--overwrite` flag) allows an `output:` that holds files lossless did not
    write; the other output rules (`validation/outputs.py`) always hold. `check_output=False`
    when the command line names the output instead (`run RECIPE OUT`). `overrides` (`--set`)
    change the first document's data before it is checked."""
    lines = text.splitlines()
    documents, problems = parse_documents(text, file)
    rules = {"overwrite": overwrite, "check_output": check_output, "allow_crimes": allow_crimes}
    if overrides and documents:
        from lossless.recipe.overrides import apply_overrides, blame

        documents[0] = (apply_overrides(documents[0][0], overrides), documents[0][1])
        docs, found = check_text_documents(
            documents, problems, file, lines, recipe_dir, resolve, **rules
        )
        return docs, blame(found, overrides)
    return check_text_documents(documents, problems, file, lines, recipe_dir, resolve, **rules)


def check_text_documents(
    documents: list[Any],
    problems: list[Problem],
    file: str,
    lines: list[str],
    recipe_dir: str | Path | None,
    resolve: bool,
    *,
    overwrite: bool = False,
    check_output: bool = True,
    allow_crimes: bool = False,
) -> tuple[list[Any], list[Problem]]:
    if not documents and not problems:
        problems.append(Problem("the recipe is empty", file=file, code="empty"))
    syntax_only = [p for p in problems if p.code.startswith("yaml-") and p.code != "yaml-tag"]
    if syntax_only:
        return [], problems
    docs = [data for data, _ in documents]
    positions = [pos for _, pos in documents]
    tagged = {p.path for p in problems if p.code == "yaml-tag"}  # the tag error says it all
    for data, pos in documents:
        problems += [
            p
            for p in schema_problems(data, file, lines, pos)
            if not any(p.path[: len(t)] == t for t in tagged)
        ]
    checker = Checker(file, lines, positions, Path(recipe_dir) if recipe_dir else None)
    checker.allow_crimes = allow_crimes
    problems += check_documents(docs, checker, resolve=resolve)
    # A shared recipe may not turn on code execution itself; say which flag the user may pass.
    from lossless.validation.safety import code_execution_problems

    first_positions = positions[0] if len(positions) == 1 else None
    problems += code_execution_problems(docs, file, positions=first_positions)
    if check_output:
        problems += _output_problems(docs, positions, file, lines, recipe_dir, overwrite)
    return docs, _dedupe(problems)


def _output_problems(
    docs: list[Any],
    positions: list[Positions],
    file: str,
    lines: list[str],
    recipe_dir: str | Path | None,
    overwrite: bool,
) -> list[Problem]:
    from lossless.recipe.inputs import walk_inputs
    from lossless.recipe.references import local_path
    from lossless.validation.outputs import output_problems

    if recipe_dir is None or not file:
        return []  # text without a file: nowhere to judge paths from
    local = (
        local_path(n, recipe_dir) for i in walk_inputs(docs) if i.kind == "model" for n in i.names()
    )
    inputs = sorted({p for p in local if p is not None and p.is_dir()})
    recipe = Path(recipe_dir) / Path(file).name
    return output_problems(
        docs, positions, str(recipe), lines, input_dirs=inputs, overwrite=overwrite, shown_file=file
    )


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for p in problems:
        key = (p.line, p.col, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return sorted(out, key=lambda p: (p.line, p.col))


def load_recipe(
    path: str | Path,
    *,
    strict: bool = False,
    resolve: bool = False,
    overwrite: bool = False,
    check_output: bool = True,
    overrides: Sequence[Override] = (),
    allow_crimes: bool = False,
) -> tuple[Recipe, list[Problem]]:
    """Read and check a recipe; raise `RecipeInvalid` if anything is an error.

    Under `strict`, warnings count as errors. Returns the Recipe and its warnings.
    """
    file = str(path)
    text, unreadable = read_yaml_text(path)
    if text is None:
        raise RecipeInvalid([unreadable] if unreadable else [])
    docs, problems = check_text(
        text,
        file,
        recipe_dir=Path(path).parent,
        resolve=resolve,
        overwrite=overwrite,
        check_output=check_output,
        overrides=overrides,
        allow_crimes=allow_crimes,
    )
    if strict:
        problems = [replace(p, severity="error") for p in problems]
    if any(p.severity == "error" for p in problems):
        raise RecipeInvalid(problems)
    recipe = build_recipe(file, docs)
    if overrides:
        from lossless.recipe.overrides import overridden_text

        recipe = replace(recipe, text=overridden_text(docs, file, [o.text for o in overrides]))
    return recipe, problems
