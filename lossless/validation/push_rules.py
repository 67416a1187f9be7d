"""Checks of `push_to_hub:` the schema cannot express: a real repo id, a document-level key on a
document that has a merge stage to push, and no two outputs pushed into one repo branch (their
files would overwrite each other, commit after commit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lossless.errors import YamlPath
from lossless.recipe.inputs import is_merge_document, step_blocks
from lossless.recipe.references import looks_like_hub_id
from lossless.validation.checker import Checker


def _pushes(docs: list[Any]) -> Iterator[tuple[int, YamlPath, Any]]:
    """(document, YAML path of the `push_to_hub` key, its value) for every one in the recipe."""
    for d, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        if "push_to_hub" in doc:
            yield d, ("push_to_hub",), doc["push_to_hub"]
        for kind in ("train", "apply"):
            for name, block in step_blocks(doc, kind):
                if isinstance(block, dict) and "push_to_hub" in block:
                    yield d, (kind, name, "push_to_hub"), block["push_to_hub"]


def check_pushes(c: Checker, docs: list[Any]) -> None:
    seen: dict[tuple[str, str | None], tuple[int, YamlPath]] = {}
    in_file_order = sorted(_pushes(docs), key=lambda p: (p[0], c.positions[p[0]].key_at(p[1])))
    for d, path, value in in_file_order:
        if path == ("push_to_hub",) and not is_merge_document(docs[d]):
            c.add(
                d,
                path,
                "`push_to_hub` at the top of a document pushes its merge stage, and this "
                "document has none",
                at_key=True,
                code="push-shape",
                hint="put it on the step to push: train.NAME.push_to_hub or apply.NAME.push_to_hub",
            )
            continue
        repo = value.get("repo") if isinstance(value, dict) else value
        at = (*path, "repo") if isinstance(value, dict) else path
        if not isinstance(repo, str):
            continue  # the schema pass reported the shape
        if not looks_like_hub_id(repo):
            c.add(
                d,
                at,
                f"`{repo}` is not a hub repo id",
                code="push-repo",
                got=repo,
                hint="write it as org/name, e.g. push_to_hub: my-org/qwen2-merged",
            )
            continue
        revision = value.get("revision") if isinstance(value, dict) else None
        key = (repo, revision if isinstance(revision, str) else None)
        if key in seen:
            first_doc, first_path = seen[key]
            line = c.positions[first_doc].key_at(first_path)[0]
            c.add(
                d,
                at,
                f"`{repo}` is pushed to twice (first on line {line}): the two outputs would "
                "overwrite each other's files",
                code="push-repo",
                hint="give each output its own repo (or its own `revision` branch)",
            )
        else:
            seen[key] = (d, at)
