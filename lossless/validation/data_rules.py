"""The `data:` entries of train and eval steps: mixtures, hub dataset options, references.

What the schema cannot say: in a list, either every dataset has a `weight` (a mixture, see
`training/mixing.py`) or none has (the files are concatenated); `revision` pins a hub dataset
and `split` / `subset` choose a part of a hub dataset or dataset directory, so they mean
nothing on a single local file or a `generate:` step's rows; a revision is written once
(`org/set@v1` or `revision: v1`, not both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossless.errors import YamlPath, format_yaml_path
from lossless.recipe.references import DATA_SUFFIXES, data_kind, hub_dataset_id, local_path
from lossless.validation.checker import Checker

TRAIN_DATA_KEYS: tuple[tuple[str, ...], ...] = (("data",), ("replay", "data"), ("ewc", "data"))


def check_train_data(c: Checker, d: int, p: YamlPath, block: dict[str, Any]) -> None:
    for keys in TRAIN_DATA_KEYS:
        node: Any = block
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            _check_data_value(c, d, (*p, *keys), node)


def check_eval_data(c: Checker, d: int, p: YamlPath, block: dict[str, Any]) -> None:
    data = block.get("data")
    for name, spec in data.items() if isinstance(data, dict) else []:
        _check_entry(c, d, (*p, "data", name), spec)


def _check_data_value(c: Checker, d: int, p: YamlPath, value: Any) -> None:
    if isinstance(value, dict) and "weight" in value:
        c.add(
            d,
            (*p, "weight"),
            "a `weight` on the only dataset changes nothing: weights share out a list of datasets",
            at_key=True,
            severity="warning",
            code="unused-setting",
            hint="list several datasets, each with a weight, or remove it",
        )
    items = value if isinstance(value, list) else [value]
    weighted = [isinstance(item, dict) and "weight" in item for item in items]
    if any(weighted) and not all(weighted):
        for i, has_weight in enumerate(weighted):
            if not has_weight:
                c.add(
                    d,
                    (*p, i),
                    f"`{format_key(p)}` mixes its datasets by weight, but entry {i} has none",
                    code="mixture-weight",
                    hint="give every entry a weight (`{path: file.jsonl, weight: 1}`), or "
                    "remove the weights to concatenate the datasets",
                )
    elif len(items) == 1 and any(weighted) and isinstance(value, list):
        c.add(
            d,
            (*p, 0, "weight"),
            "a mixture of one dataset is that dataset: its `weight` changes nothing",
            at_key=True,
            severity="warning",
            code="unused-setting",
        )
    for i, item in enumerate(items):
        _check_entry(c, d, (*p, i) if isinstance(value, list) else p, item)


def _check_entry(c: Checker, d: int, p: YamlPath, entry: Any) -> None:
    path = entry.get("path") if isinstance(entry, dict) else entry
    if not isinstance(path, str) or not path:
        return
    where = (*p, "path") if isinstance(entry, dict) else p
    kind = data_kind(path, c.step_names, c.recipe_dir)
    if kind == "hub":
        revision = hub_dataset_id(path)[1]
        if revision == "":
            c.add(
                d,
                where,
                f"`{path}` ends in `@` with no revision",
                code="bad-ref",
                hint="write `org/name@branch-tag-or-commit`, or leave out the `@`",
            )
        if revision and isinstance(entry, dict) and "revision" in entry:
            c.add(
                d,
                (*p, "revision"),
                f"`{path}` already names revision `{revision}`",
                at_key=True,
                code="duplicate-revision",
                hint="write the revision once: in the id (`org/name@rev`) or as `revision:`",
            )
    if not isinstance(entry, dict) or kind == "hub":
        return
    what = "a `generate:` step's rows" if kind == "step" else f"`{path}` is a local path"
    if "revision" in entry:
        c.add(
            d,
            (*p, "revision"),
            f"`revision` pins a hub dataset, and {what}",
            at_key=True,
            code="unused-setting",
            hint="remove `revision`, or name a hub dataset (`org/name`)",
        )
    one_file = kind == "step" or _is_file(path, c.recipe_dir)
    for key in ("split", "subset"):
        if key in entry and one_file:
            c.add(
                d,
                (*p, key),
                f"`{key}` chooses part of a hub dataset or dataset directory, and "
                + (what if kind == "step" else f"`{path}` is one file"),
                at_key=True,
                code="unused-setting",
                hint=f"remove `{key}`; a file is read whole",
            )


def _is_file(path: str, recipe_dir: Path | None) -> bool:
    found = local_path(path, recipe_dir)
    return found.is_file() if found is not None else Path(path).suffix.lower() in DATA_SUFFIXES


def format_key(p: YamlPath) -> str:
    """`("train", "t", "replay", "data")` → `replay.data`."""
    return format_yaml_path(p[2:]) if p[:1] in (("train",), ("eval",)) else format_yaml_path(p)
