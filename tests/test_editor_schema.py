"""The schema as editors run it: yaml-language-server (VS Code's YAML extension and most editors'
YAML support) and ajv, through tests/editor/check.cjs.

Needs node and `npm ci --prefix tests/editor` (.ci/run does it when npm is there); skipped
otherwise. It checks that both accept every bundled recipe, that both reject what lossless's
schema pass rejects (on the same lines), across the invalid corpus and 200 mutated recipes,
and that hovering over each key of each recipe shows that key's description.
"""

from __future__ import annotations

import copy
import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lossless.recipe.schema import load_schema, schema_path
from lossless.recipe.yaml_io import parse_documents
from lossless.validation.recipe_check import schema_problems

ROOT = Path(__file__).resolve().parent.parent
EDITOR = ROOT / "tests" / "editor"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (EDITOR / "node_modules" / "yaml-language-server").is_dir(),
    reason="needs node and `npm ci --prefix tests/editor`",
)

BUNDLED = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.name.startswith("."))
CORPUS = sorted((ROOT / "tests" / "invalid").glob("*.yaml"))
CORPUS += sorted((ROOT / "tests" / "invalid_inputs").glob("*.yaml"))
# Values that break some shape somewhere: wrong types, an unknown key, too many items.
BAD_VALUES = [None, -1, 0.5, "x", True, [], {}, {"zz": 1}, [1, 2, 3], [{"zz": 1}]]


def run_editor_check(cases: list[dict[str, Any]], *, modeline: bool = False) -> dict[str, Any]:
    """modeline: each recipe starts with the README's modeline (the server fetches the schema by
    its $id); otherwise the schema is set for every *.yaml, as VS Code's `yaml.schemas` does."""
    request = {"schema": str(schema_path()), "modeline": modeline, "cases": cases}
    done = subprocess.run(
        [NODE or "node", str(EDITOR / "check.cjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def schema_lines(text: str, name: str) -> set[int] | None:
    """Lines of lossless's schema problems (its first pass); None for text that is not YAML."""
    documents, problems = parse_documents(text, name)
    if problems or not documents:
        return None
    lines = text.splitlines()
    found = [p for data, pos in documents for p in schema_problems(data, name, lines, pos)]
    return {p.line for p in found}


def json_numbers(documents: Any) -> bool:
    """False for data JSON cannot carry (`.nan`, `.inf`: lossless refuses them, ajv never sees them)."""
    try:
        json.dumps([data for data, _ in documents], allow_nan=False)
    except ValueError:
        return False
    return True


def case(name: str, text: str, hovers: bool = False) -> dict[str, Any]:
    documents, _ = parse_documents(text, name)
    keys = [
        (pos[path], path)
        for data, pos in documents
        for path in pos
        if path and isinstance(path[-1], str)
    ]
    return {
        "name": name,
        "text": text,
        "documents": [data for data, _ in documents],
        # The middle of the key: at its first character the server still sees the node before.
        "hovers": [[line, col - 1 + len(path[-1]) // 2] for (line, col), path in keys]
        if hovers
        else [],
        "key_paths": [list(path) for _, path in keys] if hovers else [],
    }


def schema_diagnostics(result: dict[str, Any]) -> set[int]:
    return {
        d["line"] for d in result["diagnostics"] if (d["source"] or "").startswith("yaml-schema")
    }


@pytest.fixture(scope="module")
def bundled() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cases = [case(p.name, p.read_text(encoding="utf-8"), hovers=True) for p in BUNDLED]
    return cases, run_editor_check(cases)


def test_schema_passes_the_draft_07_meta_schema_in_strict_ajv(bundled: Any) -> None:
    assert bundled[1]["meta_errors"] == []


def test_editors_accept_every_bundled_recipe(bundled: Any) -> None:
    for result in bundled[1]["cases"]:
        assert result["ajv"] == [[] for _ in result["ajv"]], result["name"]
        assert result["diagnostics"] == [], result["name"]


def test_the_modeline_fetches_the_schema_by_its_id(bundled: Any) -> None:
    """The README's modeline: same hovers and no diagnostic (a schema that cannot be loaded
    is one). A modeline covers its own document, so this takes the one-document recipes."""
    cases, by_settings = bundled
    single = [i for i, c in enumerate(cases) if len(c["documents"]) == 1]
    by_modeline = run_editor_check([cases[i] for i in single], modeline=True)["cases"]
    for i, result in zip(single, by_modeline, strict=True):
        assert result["diagnostics"] == [], result["name"]
        assert result["hovers"] == by_settings["cases"][i]["hovers"], result["name"]
    assert len(single) >= 5


def unescape(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def expand(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A schema and every schema it stands for: its `$ref` target, its anyOf/oneOf branches."""
    if "$ref" in node:
        target: Any = load_schema()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return [node, *expand(target)]
    return [node, *(s for b in node.get("anyOf", []) + node.get("oneOf", []) for s in expand(b))]


def schemas_at(path: list[Any]) -> list[dict[str, Any]]:
    """Every schema the value at a YAML path may be checked against."""
    nodes = expand(load_schema())
    for part in path:
        found: list[dict[str, Any]] = []
        for node in nodes:
            if isinstance(part, int) and isinstance(node.get("items"), dict):
                found += expand(node["items"])
            elif isinstance(part, str) and part in node.get("properties", {}):
                found += expand(node["properties"][part])
            elif isinstance(part, str) and isinstance(node.get("additionalProperties"), dict):
                found += expand(node["additionalProperties"])
        nodes = found
    return nodes


def test_hover_shows_each_keys_description(bundled: Any) -> None:
    """Every key of every bundled recipe: the editor's hover holds the schema's description of
    that key."""
    cases, response = bundled
    checked = 0
    for item, result in zip(cases, response["cases"], strict=True):
        for path, hover in zip(item["key_paths"], result["hovers"], strict=True):
            where = f"{item['name']}: {'.'.join(map(str, path))}"
            assert hover, f"no hover at {where}"
            # The key's own description: the first of the schemas at its path that has one.
            texts = [s["description"] for s in schemas_at(path) if "description" in s]
            assert texts, f"no description in the schema for {where}"
            assert texts[0] in unescape(hover), f"{where}: {hover!r} lacks {texts[0]!r}"
            checked += 1
    assert checked > 300


def test_editors_reject_what_lossless_rejects_on_the_same_lines() -> None:
    """The invalid corpus: a file with a schema problem gets a schema diagnostic from the editor
    on the problem's line and an ajv error; a file whose problems are semantic gets none."""
    cases, expected = [], []
    for path in CORPUS:
        text = path.read_text(encoding="utf-8")
        lines = schema_lines(text, path.name)
        if lines is not None and json_numbers(parse_documents(text)[0]):
            cases.append(case(path.name, text))
            expected.append(lines)
    results = run_editor_check(cases)["cases"]
    assert any(expected) and not all(expected)  # both kinds are in the corpus
    for lines, result in zip(expected, results, strict=True):
        assert schema_diagnostics(result) >= lines, result["name"]
        assert bool(schema_diagnostics(result)) == bool(lines), result["name"]
        assert any(result["ajv"]) == bool(lines), result["name"]


def mutations(count: int) -> list[tuple[str, str]]:
    """`count` recipes with one value replaced (seeded), as YAML text."""
    rng = random.Random(0)
    out = []
    sources = [(p.name, list(yaml.safe_load_all(p.read_text(encoding="utf-8")))) for p in BUNDLED]
    while len(out) < count:
        name, docs = rng.choice(sources)
        docs = copy.deepcopy(docs)
        index = rng.randrange(len(docs))
        paths = list(_paths(docs[index]))
        if not paths:
            continue
        *parents, last = rng.choice(paths)
        node = docs[index]
        for key in parents:
            node = node[key]
        node[last] = copy.deepcopy(rng.choice(BAD_VALUES))
        out.append((f"{len(out)}-{name}", yaml.safe_dump_all(docs, sort_keys=False)))
    return out


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Any:
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def test_editors_agree_with_lossless_on_mutated_recipes() -> None:
    texts = mutations(200)
    cases = [case(name, text) for name, text in texts]
    expected = [schema_lines(text, name) for name, text in texts]
    results = run_editor_check(cases)["cases"]
    rejected = 0
    for lines, result in zip(expected, results, strict=True):
        assert lines is not None
        assert any(result["ajv"]) == bool(lines), (result["name"], result["ajv"], lines)
        assert bool(schema_diagnostics(result)) == bool(lines), (result, lines)
        rejected += bool(lines)
    assert 20 < rejected < 200  # both kinds, so the agreement means something
