"""The schema file as editors read it: valid draft-07 (what yaml-language-server speaks), only
draft-07 keywords, every `$ref` resolvable, a fetchable `$id`, and a description on every key
(editors show it on hover)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from lossless.recipe.schema import load_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_URL = (
    "https://raw.githubusercontent.com/lossless-llm/lossless/main/schema/recipe.schema.json"
)

# Every keyword draft-07 defines (validation, annotation, structure). A keyword outside this set
# (2019-09's dependentRequired, 2020-12's prefixItems, $defs, unevaluatedProperties, ...) is
# silently ignored by a draft-07 validator such as an editor's, so it must not appear.
DRAFT7_KEYWORDS = {
    "$schema", "$id", "$ref", "$comment", "title", "description", "default", "examples",
    "readOnly", "writeOnly", "definitions", "type", "enum", "const", "multipleOf", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern",
    "format", "contentMediaType", "contentEncoding", "items", "additionalItems", "maxItems",
    "minItems", "uniqueItems", "contains", "maxProperties", "minProperties", "required",
    "properties", "patternProperties", "additionalProperties", "dependencies", "propertyNames",
    "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
}  # fmt: skip
# Keywords whose value is a map of names → subschemas (the names are data, not keywords).
SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
# Keywords whose value is one subschema, or a list of them.
SUBSCHEMA = ("additionalProperties", "additionalItems", "items", "contains", "propertyNames")
SUBSCHEMA += ("if", "then", "else", "not", "allOf", "anyOf", "oneOf")


def subschemas(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in the document, with its JSON pointer."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key in SCHEMA_MAPS:
        for name, child in node.get(key, {}).items():
            yield from subschemas(child, f"{path}/{key}/{name}")
    for key in SUBSCHEMA:
        child = node.get(key)
        if isinstance(child, list):
            for i, item in enumerate(child):
                yield from subschemas(item, f"{path}/{key}/{i}")
        else:
            yield from subschemas(child, f"{path}/{key}")
    if isinstance(node.get("dependencies"), dict):
        for name, child in node["dependencies"].items():
            yield from subschemas(child, f"{path}/dependencies/{name}")


def resolve(pointer: str) -> Any:
    node: Any = load_schema()
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_schema_is_valid_draft_07() -> None:
    schema = load_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(schema)


def test_only_draft_07_keywords() -> None:
    used = {(path, key) for path, node in subschemas(load_schema()) for key in node}
    foreign = sorted(f"{path}: {key}" for path, key in used if key not in DRAFT7_KEYWORDS)
    assert foreign == []


def test_every_ref_resolves_to_a_definition() -> None:
    for path, node in subschemas(load_schema()):
        if "$ref" in node:
            assert node["$ref"].startswith("#/definitions/"), path
            assert isinstance(resolve(node["$ref"]), dict), path
            # Draft-07 ignores every keyword beside `$ref`; only annotations may sit there.
            assert set(node) <= {"$ref", "description"}, path


def test_id_is_the_raw_url_the_docs_give() -> None:
    assert load_schema()["$id"] == SCHEMA_URL
    for doc in ("README.md", "docs/recipes.md"):
        assert SCHEMA_URL in (ROOT / doc).read_text(encoding="utf-8"), doc


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Pointers of keys, definitions, map values and object shapes that carry no description.

    An anyOf/oneOf branch needs none: yaml-language-server's hover shows the first description
    among the schemas a value matches, innermost first, so a branch's would hide its key's."""
    missing = []
    for path, node in subschemas(schema):
        parent = path.split("/")[-2] if path.count("/") >= 2 else ""
        is_key = parent in ("properties", "patternProperties")
        is_definition = path.count("/") == 2 and parent == "definitions"
        is_map_value = path.endswith("/additionalProperties") and "$ref" not in node
        is_branch = parent in ("anyOf", "oneOf")
        is_object = "properties" in node and not is_branch
        text = node.get("description")
        needs = is_key or is_definition or is_map_value or is_object
        if needs and not (isinstance(text, str) and text.strip()):
            missing.append(path)
    return missing


def test_every_key_has_a_description() -> None:
    """A new key needs a description: editors show it on hover."""
    assert undescribed(load_schema()) == []


def test_the_description_check_finds_a_key_without_one() -> None:
    schema = json.loads(json.dumps(load_schema()))
    del schema["definitions"]["gate"]["properties"]["relative"]["description"]
    schema["definitions"]["train_step"]["properties"]["new_key"] = {"type": "integer"}
    assert undescribed(schema) == [
        "#/definitions/train_step/properties/new_key",
        "#/definitions/gate/properties/relative",
    ]


@pytest.mark.parametrize("keyword", ["prefixItems", "$defs", "dependentRequired"])
def test_the_keyword_check_finds_a_later_draft_keyword(keyword: str) -> None:
    node = {"type": "object", "properties": {"a": {keyword: {}}}}
    assert [k for _, n in subschemas(node) for k in n if k not in DRAFT7_KEYWORDS] == [keyword]


def test_named_merge_parameters_equal_the_method_table() -> None:
    """Each parameter a method takes is a key of `parameters` with its own description."""
    from lossless.methods.table import METHODS

    names = {n for spec in METHODS.values() for n in (*spec.model_params, *spec.global_params)}
    assert set(load_schema()["definitions"]["parameters"]["properties"]) == names
