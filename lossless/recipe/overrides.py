"""`--set key.path=value`: change a recipe's data before it is validated, as if the file said so.

    lossless run recipe.yaml --set models[0].parameters.weight=0.7 --set eval.forgetting.batch_size=4

The path is written like a `search.vary` key (`a.b[0].c`, into the first YAML document); the
value is read as YAML by the recipe's own reader, so `1e-4` is a float and `[a, b]` a list. The
overridden data then goes through every check the file does: a problem inside an override is
reported at `--set models[0].parameters.weight`, every other one at the file's line and column.
Overrides change the data that fingerprints hash, so an overridden step reruns like an edited one;
the recipe embedded in outputs is the overridden one (`Recipe.text`), so it reproduces the run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lossless.errors import Problem, UsageError


@dataclass(frozen=True)
class Override:
    text: str  # as written: "models[0].parameters.weight=0.7"
    keys: tuple[str | int, ...]
    value: Any

    @property
    def where(self) -> str:
        return f"--set {self.text.partition('=')[0]}"


def parse_overrides(items: Sequence[str]) -> list[Override]:
    """Each `key.path=value` parsed; a UsageError (exit 2) for one that cannot be read."""
    from lossless.recipe.yaml_io import parse_documents
    from lossless.search.space import BadPath, parse_path

    out = []
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise UsageError(
                f"--set {item}: expected key.path=value", hint="e.g. --set dtype=float16"
            )
        try:
            keys = parse_path(key.strip())
        except BadPath:
            raise UsageError(
                f"--set {item}: cannot read the key path {key!r}",
                hint="write it like models[0].parameters.weight",
            ) from None
        documents, problems = parse_documents(raw or '""', f"--set {key}")
        if problems:
            raise UsageError(f"--set {item}: the value is not YAML: {problems[0].message}")
        out.append(Override(item, keys, documents[0][0] if documents else None))
    return out


def apply_overrides(document: Any, overrides: Sequence[Override]) -> Any:
    """A copy of `document` with every override set (missing mapping keys are created)."""
    data = copy.deepcopy(document)
    for override in overrides:
        node = data
        *parents, last = override.keys
        for i, key in enumerate([*parents, last]):
            is_last = i == len(parents)
            if isinstance(key, int):
                if not isinstance(node, list) or not 0 <= key < len(node):
                    size = len(node) if isinstance(node, list) else "no"
                    raise UsageError(
                        f"{override.where}: index [{key}] is not in the recipe ({size} items there)",
                        hint="an override can change a list item, not add one",
                    )
            elif not isinstance(node, dict):
                raise UsageError(
                    f"{override.where}: `{key}` is set inside a {type(node).__name__}, not a mapping",
                    hint="check the key path against the recipe",
                )
            if is_last:
                node[key] = override.value
            else:
                if isinstance(key, str) and key not in node:
                    node[key] = {}
                node = node[key]
    return data


def blame(problems: Sequence[Problem], overrides: Sequence[Override]) -> list[Problem]:
    """Problems inside an override point at it, not at the file's line of the value it replaced."""
    from dataclasses import replace

    out = []
    for problem in problems:
        hit = next((o for o in overrides if problem.path[: len(o.keys)] == o.keys), None)
        if hit is not None:
            problem = replace(problem, file=hit.where, line=0, col=0, source_line=None)
        out.append(problem)
    return out


def overridden_text(documents: Sequence[Mapping[str, Any]], file: str, items: Sequence[str]) -> str:
    """The recipe as run, for lossless.yaml and model cards: the data with a header saying how."""
    import yaml

    sets = " ".join(f"--set {i}" for i in items)
    from pathlib import Path

    header = f"# {Path(file).name} with {sets}\n"  # the name only: no path of this machine
    body = yaml.safe_dump_all([dict(d) for d in documents], sort_keys=False)
    return header + body
