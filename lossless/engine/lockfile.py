"""`RECIPE.lock`: what every input of a recipe resolved to, so a shared recipe runs the same again.

For each reference a recipe makes (models, adapters, tokenizers, data files), the lock records:
    hub repo     {"kind": "hub", "repo": "Qwen/Qwen2-7B", "revision": "main", "commit": "<40 hex>"}
    local file   {"kind": "file", "size": 1234, "sha256": "..."}            (data, config.json)
    model dir    {"kind": "model_dir", "sha256": "..."}  sha256 over every safetensors file's
                 name and content hash, then config.json/adapter_config.json: a full read once,
                 then remembered by size and mtime (engine/content_hash.py), so a model retrained
                 in place or a different model of the same shapes is a different entry
    other dir    {"kind": "dir", "sha256": "..."}                            (every file's bytes)
The lock is JSON (so also YAML), with sorted keys and no timestamps: it diffs cleanly in git.
`lossless lock RECIPE` writes it; `lossless run --locked` compares a fresh resolution with it
and refuses to run on any difference. For the runner:
    entries = resolve_inputs(recipe, cache_dir=args.transformers_cache)
    if args.locked: check_locked(recipe_path, entries)     # LosslessError listing differences
    ... run, downloading hub refs at locked_revision(entries, ref) ...
    write_lock(recipe_path, entries)                       # every run refreshes the lock
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lossless.engine.content_hash import cached_sha256
from lossless.errors import LosslessError, YamlPath, format_yaml_path
from lossless.hub.repos import HubRef, parse_hub_ref
from lossless.recipe.model import Recipe
from lossless.recipe.references import data_kind, hub_dataset_id, local_path

LOCK_VERSION = 2  # 2: model dirs hashed by content (1 hashed their safetensors headers)
MAX_HEADER_BYTES = 100_000_000  # a safetensors header larger than this is corrupt or hostile
MODEL_META_FILES = ("config.json", "adapter_config.json")

Entry = dict[str, Any]


class Input(NamedTuple):
    """One input to pin: a model, adapter or data reference that names no step. A data value
    is a hub dataset when `recipe/references.data_kind` says so: `hf://datasets/org/name`, or
    `org/name` (`@rev`) that names nothing on disk and has no data file suffix
    (`data/train.jsonl` is a file, `teknium/OpenHermes-2.5` a dataset)."""

    path: YamlPath  # (document index, "train", "skill", "data")
    ref: str  # "org/name@rev", "data/x.jsonl", "./models/local"
    kind: str  # "model" | "data"


def lock_path(recipe_path: str | Path) -> Path:
    """`recipes/continual.yaml` → `recipes/continual.lock`."""
    return Path(recipe_path).with_suffix(".lock")


# -- which inputs a recipe has ------------------------------------------------------------------


def recipe_inputs(recipe: Recipe) -> list[Input]:
    """Every reference of the recipe (`recipe.inputs`) that is not a step: what a lock pins.

    `org/a+org/lora` is two inputs: the model and the adapter.
    """
    steps = recipe.step_names
    return [
        Input(item.path, name, item.kind)
        for item in recipe.inputs
        for name in item.names()
        if name not in steps
    ]


# -- what each input resolves to ----------------------------------------------------------------


def lock_entries(
    inputs: Iterable[Input],
    base_dir: str | Path,
    *,
    resolve_commit: Callable[[str], str] | None = None,
    where: Callable[[YamlPath], str] | None = None,
    optional: Callable[[YamlPath], bool] | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, Entry]:
    """Resolve every input: hub refs to commits (no download), local paths to content hashes.

    `base_dir` is the recipe's directory (relative paths in a recipe are taken from there).
    `resolve_commit("org/name@rev") -> commit` defaults to `lossless.hub.repos.resolve_commit`
    (a hub dataset is passed as `hf://datasets/org/name@rev`). `where(path)` says where an input
    is written, for the error of one that cannot be resolved. An input whose every use is
    `optional(path)` and cannot be resolved is left out, and put in `skipped` with the reason.
    """
    if resolve_commit is None:
        from lossless.hub.repos import resolve_commit as hub_commit

        resolve_commit = hub_commit
    inputs = list(inputs)
    required = {ref for path, ref, _ in inputs if optional is None or not optional(path)}
    entries: dict[str, Entry] = {}
    missing: list[str] = []
    for path, ref, kind in inputs:
        if ref in entries:
            continue
        local = local_path(ref, base_dir)
        hub = _hub_ref(ref, kind, base_dir) if local is None else None
        if hub is not None:
            try:
                commit = resolve_commit(_commit_query(ref, hub))
            except LosslessError as error:
                if ref not in required and skipped is not None:
                    skipped[ref] = error.message
                    continue
                raise _located(error, path, kind, where) from None
            entry: Entry = {
                "kind": "hub",
                "repo": hub.repo_id,
                "revision": hub.revision or "main",
                "commit": commit,
            }
            if hub.repo_type != "model":
                entry["repo_type"] = hub.repo_type
            entries[ref] = entry
        elif local is not None:
            entries[ref] = hash_local(local)
        else:
            missing.append(f"{ref} (at {format_yaml_path(path[1:])})")
    if missing:
        raise LosslessError(
            f"cannot lock: {len(missing)} input(s) are neither files nor hub repos: "
            + ", ".join(missing),
            hint=f"paths are relative to the recipe's directory ({base_dir}), then the current one",
        )
    return entries


def _hub_ref(ref: str, kind: str, base_dir: str | Path) -> HubRef | None:
    """The hub repo a reference that is no local path names (None: neither)."""
    if kind != "data":
        return parse_hub_ref(ref)
    if data_kind(ref, (), base_dir) != "hub":
        return None
    repo, revision = hub_dataset_id(ref)
    return HubRef(repo, revision, "dataset")


def _commit_query(ref: str, hub: HubRef) -> str:
    """What `resolve_commit` is asked: the reference itself, a dataset with its repo type."""
    if hub.repo_type != "dataset":
        return ref
    return f"hf://datasets/{hub.repo_id}" + (f"@{hub.revision}" if hub.revision else "")


def _located(
    error: LosslessError, path: YamlPath, kind: str, where: Callable[[YamlPath], str] | None
) -> LosslessError:
    """An unresolvable hub input's error, with where it is written and (data) the ways out."""
    place = where(path) if where is not None else format_yaml_path(path[1:])
    hint = error.hint
    if kind == "data":
        from lossless.engine.hub_data import hub_data_hint

        hint = hub_data_hint(hint)
    return LosslessError(f"{place}: {error.message}", hint=hint)


def hash_local(path: Path) -> Entry:
    """The content hash of a local file, model directory or other directory."""
    if path.is_file():
        return {"kind": "file", "size": path.stat().st_size, "sha256": cached_sha256(path)}
    tensors = sorted(path.glob("*.safetensors"))
    if tensors or any((path / name).exists() for name in MODEL_META_FILES):
        return {"kind": "model_dir", "sha256": hash_model_dir(path)}
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(hash_local(file)["sha256"].encode())
    return {"kind": "dir", "sha256": digest.hexdigest()}


def hash_model_dir(path: Path) -> str:
    """sha256 over each safetensors file's name and content hash, then config/adapter config."""
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")):
        read_safetensors_header(file)  # a corrupt file is an error, not a hash
        digest.update(f"{file.name}\0{cached_sha256(file)}\0".encode())
    for name in MODEL_META_FILES:
        if (path / name).is_file():
            digest.update(name.encode() + b"\0" + (path / name).read_bytes())
    return digest.hexdigest()


def read_safetensors_header(file: Path) -> bytes:
    """The raw JSON header of a safetensors file, read with its length bounded (no full parse)."""
    size = file.stat().st_size
    with file.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise LosslessError(f"{file} is not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise LosslessError(
                f"{file}: corrupt safetensors header (declares {length} bytes, file is {size})",
                hint="download or write the file again",
            )
        return f.read(length)


# -- the lock file ------------------------------------------------------------------------------


def write_lock(recipe_path: str | Path, entries: Mapping[str, Entry]) -> Path:
    """Write `RECIPE.lock` beside the recipe (temp file + rename: never a half-written lock)."""
    recipe_path = Path(recipe_path)
    target = lock_path(recipe_path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(lock_text(recipe_path, entries))
    os.replace(tmp, target)
    return target


def lock_text(recipe_path: str | Path, entries: Mapping[str, Entry]) -> str:
    """The lock file's JSON text (also embedded in output model cards)."""
    recipe_path = Path(recipe_path)
    document = {
        "lossless_lock": LOCK_VERSION,
        "recipe": recipe_path.name,
        "recipe_sha256": hashlib.sha256(recipe_path.read_bytes()).hexdigest(),
        "inputs": dict(sorted(entries.items())),
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def read_lock(path: str | Path) -> dict[str, Entry]:
    """The `inputs` of a lock file; a clear error if it is missing or not a lossless lock."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise LosslessError(
            f"{path} does not exist",
            hint=f"create it with `lossless lock {path.with_suffix('.yaml')}`",
        ) from None
    except json.JSONDecodeError as error:
        raise LosslessError(f"{path} is not valid JSON: {error}") from None
    if isinstance(document, dict) and document.get("lossless_lock") == 1:
        raise LosslessError(
            f"{path} was written by an older lossless (lock version 1 identified model "
            "directories by their headers, version 2 by their content)",
            hint="regenerate it with `lossless lock RECIPE` after checking the inputs are the ones you want",
        )
    if not isinstance(document, dict) or document.get("lossless_lock") != LOCK_VERSION:
        raise LosslessError(
            f"{path} is not a lossless lock file (version {LOCK_VERSION})",
            hint="regenerate it with `lossless lock RECIPE`",
        )
    inputs = document.get("inputs")
    if not isinstance(inputs, dict):
        raise LosslessError(f"{path}: `inputs` must be a mapping")
    return inputs


def compare_lock(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> list[str]:
    """Every difference between the locked inputs and a fresh resolution, as a sentence."""
    differences: list[str] = []
    for ref in sorted(set(old) | set(new)):
        before, after = old.get(ref), new.get(ref)
        if before is None:
            differences.append(f"{ref}: a new input, not in the lock")
        elif after is None:
            differences.append(f"{ref}: in the lock but no longer used by the recipe")
        elif before.get("kind") != after.get("kind"):
            differences.append(
                f"{ref}: was a {before.get('kind')} when locked, is now a {after.get('kind')}"
            )
        elif before.get("kind") == "hub" and before.get("commit") != after.get("commit"):
            differences.append(
                f"{ref}: {after.get('revision')} now resolves to commit "
                f"{str(after.get('commit'))[:12]}, the lock pins {str(before.get('commit'))[:12]} "
                f"(pin it with `{before.get('repo')}@{before.get('commit')}` to keep the old one)"
            )
        elif before.get("sha256") != after.get("sha256"):
            differences.append(
                f"{ref}: content changed since it was locked "
                f"(sha256 {str(before.get('sha256'))[:12]} → {str(after.get('sha256'))[:12]})"
            )
    return differences


def locked_revision(entries: Mapping[str, Entry], ref: str) -> str | None:
    """The commit a lock pins `ref` to, so `run --locked` downloads exactly what was locked."""
    entry = entries.get(ref)
    return str(entry["commit"]) if entry and entry.get("kind") == "hub" else None


def resolve_inputs(recipe: Recipe, *, cache_dir: str | None = None) -> dict[str, Entry]:
    """What every input of the recipe resolves to now (hub: no download; offline: the cache)."""
    entries, _ = resolve_for_run(recipe, cache_dir=cache_dir, steps=None)
    return entries


def resolve_for_run(
    recipe: Recipe, *, cache_dir: str | None, steps: Collection[str] | None
) -> tuple[dict[str, Entry], dict[str, str]]:
    """`resolve_inputs` for a run of `steps` (None: every step): an input that only steps
    outside them read and that cannot be resolved (offline, unreachable) is left out, and
    returned with the reason, so `--only a` never fails on step b's hub dataset."""
    from lossless.hub.repos import resolve_commit

    def commit(ref: str) -> str:  # datasets live in the datasets library's (default) hub cache
        return resolve_commit(
            ref, cache_dir=None if ref.startswith("hf://datasets/") else cache_dir
        )

    owners: dict[YamlPath, set[str]] = {}
    for item in recipe.inputs:
        owners.setdefault(item.path, set()).add(item.owner)
    skipped: dict[str, str] = {}
    entries = lock_entries(
        recipe_inputs(recipe),
        Path(recipe.path).parent,
        resolve_commit=commit,
        where=recipe.where,
        optional=None if steps is None else lambda path: not owners.get(path, set()) & set(steps),
        skipped=skipped,
    )
    return entries, skipped


def check_locked(
    recipe_path: str | Path, entries: Mapping[str, Entry], *, unresolved: Collection[str] = ()
) -> None:
    """For `run --locked`: raise (listing every difference) unless RECIPE.lock matches `entries`.
    `unresolved`: refs this run could not resolve and does not read (compared no further)."""
    locked = read_lock(lock_path(recipe_path))
    locked = {ref: entry for ref, entry in locked.items() if ref not in unresolved}
    differences = compare_lock(locked, entries)
    if differences:
        raise locked_error(recipe_path, differences)


def locked_error(recipe_path: str | Path, differences: list[str]) -> LosslessError:
    """The `run --locked` refusal: every difference, and the two ways forward."""
    lines = "\n".join(f"  - {d}" for d in differences)
    return LosslessError(
        f"{lock_path(recipe_path)} does not match what the recipe resolves to now "
        f"({len(differences)} difference(s)):\n{lines}",
        hint=f"run without --locked, or accept the new inputs with `lossless lock {recipe_path}`",
    )
