"""`RECIPE.lock`: what every input of a recipe resolved to, so a shared recipe runs the same again.

For each reference a recipe makes (models, adapters, tokenizers, data files), the lock records:
    hub repo     {"kind": "hub", "repo": "Qwen/Qwen2-7B", "revision": "main", "commit": "<40 hex>"}
    local file   {"kind": "file", "size": 1234, "sha256": "..."}            (data, config.json)
    model dir    {"kind": "model_dir", "sha256": "..."}  sha256 of safetensors headers + file
                 sizes + config.json/adapter_config.json: cheap for a 100 GB model, and changes
                 when any tensor's name, dtype, shape or offsets change (not when values alone do)
    other dir    {"kind": "dir", "sha256": "..."}                            (every file's bytes)
The lock is JSON (so also YAML), with sorted keys and no timestamps: it diffs cleanly in git.
`lossless lock RECIPE` writes it; `lossless run --locked` compares a fresh resolution with it
and refuses to run on any difference. For the runner:
    entries = resolve_inputs(recipe_path, documents, cache_dir=args.transformers_cache)
    if args.locked: check_locked(recipe_path, entries)     # LosslessError listing differences
    ... run, downloading hub refs at locked_revision(entries, ref) ...
    write_lock(recipe_path, entries)                       # every run refreshes the lock
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from lossless.errors import LosslessError, YamlPath, format_yaml_path
from lossless.hub.repos import parse_hub_ref

LOCK_VERSION = 1
MAX_HEADER_BYTES = 100_000_000  # a safetensors header larger than this is corrupt or hostile
MODEL_META_FILES = ("config.json", "adapter_config.json")
NOT_REFS = {"base", "union"}  # tokenizer_source values that are not models

Entry = dict[str, Any]


class Input(NamedTuple):
    """One reference a recipe makes. Data paths are local unless written `hf://datasets/org/name`
    (`data/train.jsonl` is shaped like a hub id too, so the explicit prefix decides)."""

    path: YamlPath  # (document index, "train", "skill", "data")
    ref: str  # "org/name@rev", "data/x.jsonl", "./models/local"
    kind: str  # "model" | "data"


def lock_path(recipe_path: str | Path) -> Path:
    """`recipes/continual.yaml` → `recipes/continual.lock`."""
    return Path(recipe_path).with_suffix(".lock")


# -- which inputs a recipe has ------------------------------------------------------------------


def step_names(documents: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names usable as references: train/apply/eval step names and merge stage names."""
    names: set[str] = set()
    for doc in documents:
        for kind in ("train", "apply", "eval"):
            if isinstance(doc.get(kind), Mapping):
                names.update(str(k) for k in doc[kind])
        if "merge_method" in doc:
            names.add(str(doc.get("name", "merged")))
    return names


def recipe_inputs(documents: Sequence[Mapping[str, Any]]) -> list[Input]:
    """Every reference that is not a step name: what a lock must pin.

    >>> [i.ref for i in recipe_inputs([{"models": [{"model": "org/a+org/lora"}]}])]
    ['org/a', 'org/lora']
    """
    found: list[Input] = []
    steps = step_names(documents)

    def add(path: YamlPath, value: Any, kind: str = "model") -> None:
        if isinstance(value, str):
            parts = value.split("+") if kind == "model" else [value]
            for part in parts:
                if part and part not in steps and part not in NOT_REFS:
                    found.append(Input(path, part, kind))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                add((*path, i), item, kind)
        elif isinstance(value, Mapping) and isinstance(value.get("path"), str):
            add((*path, "path"), value["path"], kind)  # data: {path, format, split}

    for d, doc in enumerate(documents):
        for i, model in enumerate(_list(doc.get("models"))):
            if isinstance(model, Mapping):
                add((d, "models", i, "model"), model.get("model"))
        for s, slice_ in enumerate(_list(doc.get("slices"))):
            if not isinstance(slice_, Mapping):
                continue
            add((d, "slices", s, "base_model"), slice_.get("base_model"))
            for i, source in enumerate(_list(slice_.get("sources"))):
                if isinstance(source, Mapping):
                    add((d, "slices", s, "sources", i, "model"), source.get("model"))
        for key in ("base_model", "tokenizer_source"):
            add((d, key), doc.get(key))
        if isinstance(doc.get("tokenizer"), Mapping):
            add((d, "tokenizer", "source"), doc["tokenizer"].get("source"))
        for name, step in _steps(doc, "train"):
            where: YamlPath = (d, "train", name)
            add((*where, "base"), step.get("base"))
            add((*where, "data"), step.get("data"), "data")
            for extra in ("replay", "ewc"):
                if isinstance(step.get(extra), Mapping):
                    add((*where, extra, "data"), step[extra].get("data"), "data")
            init = step.get("init")
            if isinstance(init, Mapping):
                if isinstance(init.get("config"), str) and init["config"].endswith(".json"):
                    add((*where, "init", "config"), init["config"], "data")  # else a preset name
                tokenizer = init.get("tokenizer")
                if isinstance(tokenizer, Mapping):
                    add(
                        (*where, "init", "tokenizer", "train_on"), tokenizer.get("train_on"), "data"
                    )
                else:
                    add((*where, "init", "tokenizer"), tokenizer)
        for name, step in _steps(doc, "apply"):
            add((d, "apply", name, "adapter"), step.get("adapter"))
            add((d, "apply", name, "to"), step.get("to"))
            for i, use in enumerate(_list(step.get("adapters"))):
                if isinstance(use, Mapping):
                    add((d, "apply", name, "adapters", i, "adapter"), use.get("adapter"))
        for name, step in _steps(doc, "eval"):
            add((d, "eval", name, "models"), step.get("models"))
            add((d, "eval", name, "reference"), step.get("reference"))
            if isinstance(step.get("data"), Mapping):
                for dataset, spec in step["data"].items():
                    add((d, "eval", name, "data", dataset), spec, "data")
    return found


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _steps(doc: Mapping[str, Any], kind: str) -> list[tuple[str, Mapping[str, Any]]]:
    block = doc.get(kind)
    if not isinstance(block, Mapping):
        return []
    return [(str(k), v) for k, v in block.items() if isinstance(v, Mapping)]


# -- what each input resolves to ----------------------------------------------------------------


def lock_entries(
    inputs: Iterable[Input],
    base_dir: str | Path,
    *,
    resolve_commit: Callable[[str], str] | None = None,
) -> dict[str, Entry]:
    """Resolve every input: hub refs to commits (no download), local paths to content hashes.

    `base_dir` is the recipe's directory (relative paths in a recipe are taken from there).
    `resolve_commit("org/name@rev") -> commit` defaults to `lossless.hub.repos.resolve_commit`.
    """
    if resolve_commit is None:
        from lossless.hub.repos import resolve_commit as hub_commit

        resolve_commit = hub_commit
    entries: dict[str, Entry] = {}
    missing: list[str] = []
    for path, ref, kind in inputs:
        if ref in entries:
            continue
        local = Path(base_dir, ref).expanduser()
        explicit = ref.startswith(("hf://", "hub:"))
        hub = None if local.exists() or (kind == "data" and not explicit) else parse_hub_ref(ref)
        if hub is not None:
            entry: Entry = {
                "kind": "hub",
                "repo": hub.repo_id,
                "revision": hub.revision or "main",
                "commit": resolve_commit(ref),
            }
            if hub.repo_type != "model":
                entry["repo_type"] = hub.repo_type
            entries[ref] = entry
        elif local.exists():
            entries[ref] = hash_local(local)
        else:
            missing.append(f"{ref} (at {format_yaml_path(path[1:])})")
    if missing:
        raise LosslessError(
            f"cannot lock: {len(missing)} input(s) are neither files nor hub repos: "
            + ", ".join(missing),
            hint=f"paths are relative to the recipe's directory ({base_dir})",
        )
    return entries


def hash_local(path: Path) -> Entry:
    """The content hash of a local file, model directory or other directory."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return {"kind": "file", "size": path.stat().st_size, "sha256": digest.hexdigest()}
    tensors = sorted(path.glob("*.safetensors"))
    if tensors or any((path / name).exists() for name in MODEL_META_FILES):
        return {"kind": "model_dir", "sha256": hash_model_dir(path)}
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(hash_local(file)["sha256"].encode())
    return {"kind": "dir", "sha256": digest.hexdigest()}


def hash_model_dir(path: Path) -> str:
    """sha256 over each safetensors file's name, size and header, then config/adapter config."""
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")):
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        digest.update(read_safetensors_header(file))
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


def resolve_inputs(
    recipe_path: str | Path, documents: Sequence[Mapping[str, Any]], *, cache_dir: str | None = None
) -> dict[str, Entry]:
    """What every input of the recipe resolves to now (hub: no download; offline: the cache)."""
    from lossless.hub.repos import resolve_commit

    return lock_entries(
        recipe_inputs(documents),
        Path(recipe_path).parent,
        resolve_commit=lambda ref: resolve_commit(ref, cache_dir=cache_dir),
    )


def check_locked(recipe_path: str | Path, entries: Mapping[str, Entry]) -> None:
    """For `run --locked`: raise (listing every difference) unless RECIPE.lock matches `entries`."""
    differences = compare_lock(read_lock(lock_path(recipe_path)), entries)
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
