"""How every step's output comes into existence: a partial directory, a manifest, one rename.

A step writes into `.<name>.partial-<tag>` beside its target, where the tag depends only on the
step's fingerprint: a rerun of the same step finds it again (a merge resumes at its first
unfinished shard, a train step at its last checkpoint). When the step has finished,
`publish` writes `lossless-manifest.json` (every file's size and sha256, and the recipe that made
it) last and renames the directory into place, so a path with the target's name is always a
finished output. The manifest is also how lossless knows what it wrote: an older output is
deleted only when every file in it is listed in its manifest; anything else is moved aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.tensors.writer import sha256_file

MANIFEST = "lossless-manifest.json"


def partial_dir(target: Path, fingerprint: str) -> Path:
    """`out/merged` + fingerprint → `out/.merged.partial-1a2b3c4d5e6f7a8b` (stable across runs)."""
    tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return target.parent / f".{target.name}.partial-{tag}"


def open_partial(target: Path, fingerprint: str) -> Path:
    """The partial dir for this fingerprint, created; partials of other fingerprints are gone."""
    partial = partial_dir(target, fingerprint)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        if stale != partial:
            shutil.rmtree(stale, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    return partial


def overlapping_input(target: Path, input_dirs: Sequence[Path]) -> Path | None:
    """The first input that `target` is, contains or lies inside (as given), or None: publishing
    replaces the target whole, which would delete (or write into) what the step reads."""
    out = Path(target).resolve()
    for given in input_dirs:
        source = Path(given).resolve()
        if out == source or out in source.parents or source in out.parents:
            return Path(given)
    return None


def check_not_input(target: Path, input_dirs: Sequence[Path], step: str | None = None) -> None:
    """Refuse a target that overlaps an input (`overlapping_input`)."""
    given = overlapping_input(target, input_dirs)
    if given is not None:
        out = Path(target).resolve()
        who = f"the output of step `{step}`, {out}," if step else f"output directory {out}"
        raise LosslessError(
            f"{who} is or contains the input {given}",
            hint="choose an output path outside every input model's directory",
        )


def versions() -> dict[str, str]:
    import lossless

    found = {"lossless": lossless.__version__}
    for package in ("torch", "transformers", "safetensors"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def write_manifest(
    directory: Path, fingerprint: str, known: Mapping[str, str] = {}, recipe: Path | None = None
) -> None:
    """Every file's sha256 (`known` ones, e.g. shards hashed while written, are not re-read) and
    size, and the recipe that made it (`recipe`: its path), so another recipe's output is known."""
    files, sizes = {}, {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST:
            files[rel] = known.get(rel) or sha256_file(path)
            sizes[rel] = path.stat().st_size
    manifest: dict[str, Any] = {
        "fingerprint": fingerprint,
        "versions": versions(),
        "files": files,
        "sizes": sizes,
    }
    if recipe is not None:
        manifest["recipe"] = {"path": str(Path(recipe).resolve()), "name": Path(recipe).name}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a published output, or None (none there, or not readable as one)."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
    return manifest if ok else None


def unlisted_files(directory: Path, manifest: Mapping[str, Any] | None) -> list[str]:
    """Files under `directory` that its manifest does not list: lossless did not write them."""
    listed = set((manifest or {}).get("files", {})) | {MANIFEST}
    found = (p.relative_to(directory).as_posix() for p in Path(directory).rglob("*"))
    return sorted(rel for rel in found if rel not in listed and not (directory / rel).is_dir())


def publish(
    partial: Path,
    target: Path,
    fingerprint: str,
    known: Mapping[str, str] | None = None,
    recipe: Path | None = None,
) -> Path | None:
    """Manifest last, then the partial dir renamed to `target`. An older output there is moved
    aside first and deleted after the new one is in place, but only if lossless wrote every file
    in it; otherwise (`--overwrite` of a folder of the user's) it stays at the returned path."""
    write_manifest(partial, fingerprint, known or {}, recipe)
    target.parent.mkdir(parents=True, exist_ok=True)
    old: Path | None = None
    kept: Path | None = None
    if target.exists():
        ours = not unlisted_files(target, read_manifest(target))
        if ours:
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        else:
            kept = target.parent / f"{target.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(target, kept)
    os.replace(partial, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return kept
