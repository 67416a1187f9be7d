"""Find and load `recipe.schema.json`, the single source of structural truth for recipes.

In a source checkout it lives in `schema/` beside the package; an installed wheel carries a copy
inside the package (`lossless/recipe.schema.json`, see pyproject's force-include).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # lossless/
_CANDIDATES = (
    _PACKAGE_DIR / "recipe.schema.json",  # installed wheel
    _PACKAGE_DIR.parent / "schema" / "recipe.schema.json",  # source checkout
)


def schema_path() -> Path:
    for path in _CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "recipe.schema.json not found in " + " or ".join(str(p) for p in _CANDIDATES)
    )


@cache
def load_schema() -> dict[str, Any]:
    """The parsed schema (cached: validating many files reads it once)."""
    return json.loads(schema_path().read_text(encoding="utf-8"))


@cache
def validator() -> Any:
    """A draft-07 validator for one recipe document (draft-07: what editors' YAML servers speak)."""
    from jsonschema import Draft7Validator

    return Draft7Validator(load_schema())


def top_level_keys() -> list[str]:
    return list(load_schema()["properties"])
