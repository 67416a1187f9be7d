"""What a model reference in a recipe points at: another step, a local directory, or a hub repo.

Rules (as a careful mergekit user expects them):
- a step name (train/apply/eval step or merge stage) always wins;
- `./x`, `../x`, `/x`, `~/x` are always local paths (they may not exist yet: the caller decides);
- a relative path is looked up beside the recipe first, then in the current directory (mergekit
  resolves against the CWD; a recipe that travels with its models expects its own directory);
- `org/name` not found on disk is a hub id; a bare word that is none of these is an error, with a
  did-you-mean over the step names (a typo'd step name is the usual cause).

Data values (`data:`, `replay.data`, eval datasets) follow the same order, with one more rule: a
name that ends in a data file suffix (`data/train.jsonl`) is a local file even when it is missing
(validation says so), because it is also shaped like `org/name`. So `teknium/OpenHermes-2.5` or
`org/set@v1.0` is a hub dataset and `data/new.jsonl` a file; `hf://datasets/org/name` always
means the hub.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from lossless.errors import LosslessError
from lossless.recipe.model import ModelRef

RefKind = Literal["step", "local", "hub"]

# The files `training/datasets.load_rows` reads, by suffix.
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")
HUB_PREFIXES = ("hf://", "hub:")

# `Qwen/Qwen2-7B`, `meta-llama/Llama-3.1-8B`: one slash, no spaces, no leading dot.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_PATH_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")


class UnknownReference(LosslessError):
    """A reference that is no step, no existing path and no hub id."""


def is_explicit_path(name: str) -> bool:
    return name.startswith(_PATH_PREFIXES) or bool(re.match(r"^[A-Za-z]:[\\/]", name))


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name


def local_path(name: str, recipe_dir: str | Path | None) -> Path | None:
    """The existing file or directory `name` names, or None. Relative: recipe dir, then CWD."""
    try:  # a name longer than the OS allows (ENAMETOOLONG) names nothing on disk
        path = Path(name).expanduser()
        if path.is_absolute():
            return path if path.exists() else None
        for root in (Path(recipe_dir) if recipe_dir else None, Path.cwd()):
            if root is not None and (root / path).exists():
                return root / path
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None
    return None


def did_you_mean(word: str, choices: Collection[str], n: int = 1) -> str | None:
    """`did you mean 'slerp'?` text, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


def classify_name(name: str, step_names: Collection[str], recipe_dir: str | Path | None) -> RefKind:
    if name in step_names:
        return "step"
    if is_explicit_path(name) or local_path(name, recipe_dir) is not None:
        return "local"
    if looks_like_hub_id(name):
        return "hub"
    hint = did_you_mean(name, step_names)
    if hint is None:
        hint = "write a step name, a path starting with `./`, or a hub id like `org/name`"
        if step_names:
            hint += f" (steps: {', '.join(sorted(step_names))})"
    raise UnknownReference(
        f"`{name}` is not a step name, an existing path, or a hub id (org/name)", hint=hint
    )


def data_kind(name: str, step_names: Collection[str], recipe_dir: str | Path | None) -> RefKind:
    """What a data value reads: a `generate:` step's rows, a local file or dataset directory, or
    a hub dataset (never an error: a missing local file is validation's to report)."""
    if name in step_names:
        return "step"
    if name.startswith(HUB_PREFIXES):
        return "hub"
    if is_explicit_path(name) or local_path(name, recipe_dir) is not None:
        return "local"
    repo = hub_dataset_id(name)[0]
    if Path(repo).suffix.lower() in DATA_SUFFIXES or not looks_like_hub_id(repo):
        return "local"
    return "hub"


def hub_dataset_id(name: str) -> tuple[str, str | None]:
    """(repo id, revision) of a hub dataset value: `org/name@rev`, `hf://datasets/org/name`.

    >>> hub_dataset_id("hf://datasets/teknium/OpenHermes-2.5@v1")
    ('teknium/OpenHermes-2.5', 'v1')
    """
    body = name.removeprefix("hub:").removeprefix("hf://").removeprefix("datasets/")
    repo, at, revision = body.partition("@")
    return repo, revision if at else None


def data_value(path: str, revision: str | None) -> str:
    """A data entry as one reference: `{path: org/set, revision: v1}` is `org/set@v1` (the lock's
    key, the fingerprint's name); a path that carries its own `@rev` keeps it, and a file path
    takes no revision (validation reports one)."""
    if not revision or "@" in path or is_explicit_path(path):
        return path
    return path if Path(path).suffix.lower() in DATA_SUFFIXES else f"{path}@{revision}"


def classify_ref(
    ref: ModelRef, step_names: Collection[str], recipe_dir: str | Path | None
) -> RefKind:
    """Kind of the model part of `ref` (its `+lora` part is classified separately by callers)."""
    return classify_name(ref.name, step_names, recipe_dir)


def read_model_config(
    ref: ModelRef, kind: RefKind, recipe_dir: str | Path | None
) -> dict[str, Any] | None:
    """config.json of a local directory or a hub model already in the cache; never downloads.

    None when it cannot be found without the network (a step output, a model not yet cached).
    """
    file: Path | None = None
    if kind == "local":
        base = local_path(ref.name, recipe_dir)
        file = base / "config.json" if base is not None and base.is_dir() else None
    elif kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(ref.name, "config.json", revision=ref.revision)
        file = Path(found) if isinstance(found, str) else None
    if file is None or not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
