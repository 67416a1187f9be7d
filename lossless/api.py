"""The Python API: what the CLI does, as functions (documented in docs/python.md).

    import lossless
    recipe, warnings = lossless.load_recipe("recipe.yaml")      # RecipeInvalid lists every problem
    problems = lossless.validate("recipe.yaml")                  # [] when valid; no torch import
    results = lossless.run("recipe.yaml", quiet=True)            # {step: StepStatus}; GateFailed on a breach

`run` takes `RunOptions` fields as keywords (`work_dir`, `out`, `force`, `only`, `seed`, ...).
Errors are the CLI's: `RecipeInvalid` (exit 2 there), `GateFailed` and `LosslessError` (exit 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import Problem, RecipeInvalid

if TYPE_CHECKING:
    from lossless.engine.freshness import StepStatus
    from lossless.recipe.model import Recipe


def load_recipe(path: str | Path, *, strict: bool = False) -> tuple[Recipe, list[Problem]]:
    """The checked recipe and its warnings; raises `RecipeInvalid` with every problem."""
    from lossless.validation.recipe_check import load_recipe as load

    return load(path, strict=strict)


def validate(paths: str | Path | Iterable[str | Path], *, strict: bool = False) -> list[Problem]:
    """Every problem (errors and warnings) of one or several recipe files; [] when all are clean."""
    found: list[Problem] = []
    for path in [paths] if isinstance(paths, str | Path) else paths:
        try:
            _, warnings = load_recipe(path, strict=strict)
            found += warnings
        except RecipeInvalid as invalid:
            found += invalid.problems
    return found


def run(recipe: str | Path | Recipe, **options: Any) -> dict[str, StepStatus]:
    """Run every step that is not fresh, as `lossless run` does; returns each step's status.

    Options are `lossless.engine.context.RunOptions` fields; `force` and `only` may be lists.
    """
    from lossless.engine.context import RunOptions
    from lossless.engine.runner import Runner

    if isinstance(recipe, str | Path):
        recipe, _ = load_recipe(recipe)
    for key in ("force", "only"):
        if key in options:
            options[key] = frozenset(options[key])
    for key in ("work_dir", "out"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    statuses = Runner(recipe, RunOptions(**options)).run()
    return {status.name: status for status in statuses}
