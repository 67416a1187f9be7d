"""Hub datasets in a run: each read at one commit, and their errors at the recipe's line.

A data value such as `teknium/OpenHermes-2.5` or `{path: org/set, revision: v1}` names a
branch or tag; `Resolver.dataset_commit` turns it into the commit this run reads (the lock's
under `--locked`), once, and the fingerprint records that commit. Before a train or eval step
loads its data, `with_pinned_datasets` writes that commit into the step's own block, so the
step code loads exactly it:

    data: [{path: org/set, weight: 2}, data/new.jsonl]
      →   [{path: org/set, weight: 2, revision: 3f2a…}, data/new.jsonl]

`at_input` puts the recipe's file:line:col and YAML path in front of a hub dataset's error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from lossless.errors import LosslessError, YamlPath
from lossless.recipe.model import EvalStep, Recipe, Step, TrainStep
from lossless.recipe.references import data_kind, hub_dataset_id

StepT = TypeVar("StepT", bound=Step)
TOKEN_FIX = "set HF_TOKEN (or `hf auth login`) for a private or gated dataset"
OTHER_FIXES = "pin `revision:` to a commit (one in the cache works offline), or use a local file"


def hub_data_hint(hint: str | None) -> str:
    """A hub dataset error's hint, completed with the ways out the client's own hint lacks."""
    if not hint:
        return f"{TOKEN_FIX}, {OTHER_FIXES}"
    return (
        f"{hint}; or {OTHER_FIXES}"
        if "HF_TOKEN" in hint
        else f"{hint}; or {TOKEN_FIX}, {OTHER_FIXES}"
    )


def hub_data_inputs(recipe: Recipe, step: str) -> list[Any]:
    """The step's data inputs that are hub datasets, in recipe order."""
    recipe_dir = Path(recipe.path).parent
    return [
        item
        for item in recipe.inputs_of(step, "data")
        if data_kind(item.value, recipe.step_names, recipe_dir) == "hub"
    ]


def at_input(error: LosslessError, recipe: Recipe, path: YamlPath) -> LosslessError:
    """`error` with where the input is written in front, and how to fix a hub dataset."""
    return LosslessError(f"{recipe.where(path)}: {error.message}", hint=hub_data_hint(error.hint))


def with_pinned_datasets(step: StepT, recipe: Recipe, commit_of: Callable[[str], str]) -> StepT:
    """`step` with every hub dataset of its block read at `commit_of(value)`."""
    items = hub_data_inputs(recipe, step.name)
    if not items or not isinstance(step, TrainStep | EvalStep):
        return step
    block: Any = dict(step.block) if isinstance(step, TrainStep) else dict(step.settings)
    for item in items:
        try:
            commit = commit_of(item.value)
        except LosslessError as error:
            raise at_input(error, recipe, item.path) from None
        block = _pin(block, item.path[3:], commit)
    if isinstance(step, TrainStep):
        from lossless.recipe.build import build_train

        return build_train(step.name, block)  # type: ignore[return-value]
    return dataclasses.replace(step, settings=block, data=block.get("data", step.data))


def _pin(node: Any, keys: tuple[Any, ...], commit: str) -> Any:
    """A copy of `node` with the data value at `keys` read at `commit`: a string becomes
    `{path: org/set, revision: commit}`; a `{path: ...}` mapping gets `revision: commit`."""
    key, rest = keys[0], keys[1:]
    if rest == ("path",) and isinstance(node[key], dict):
        entry = dict(node[key])
        entry["path"] = _bare(entry["path"])
        entry["revision"] = commit
        replaced: Any = entry
    elif rest:
        replaced = _pin(node[key], rest, commit)
    else:
        replaced = {"path": _bare(node[key]), "revision": commit}
    if isinstance(node, list):
        return [*node[:key], replaced, *node[key + 1 :]]
    return {**node, key: replaced}


def _bare(value: str) -> str:
    """`hf://datasets/org/set@v1` → `hf://datasets/org/set`: the commit replaces the revision."""
    revision = hub_dataset_id(value)[1]
    return value[: -len(revision) - 1] if revision is not None else value


@contextmanager
def located_hub_errors(recipe: Recipe, step: str) -> Iterator[None]:
    """Inside a step: a hub dataset that fails to load names the recipe line that reads it."""
    from lossless.training.hub_datasets import HubDataError

    try:
        yield
    except HubDataError as error:
        for item in hub_data_inputs(recipe, step):
            if hub_dataset_id(item.value)[0] == error.repo_id:
                raise at_input(error, recipe, item.path) from None
        raise
