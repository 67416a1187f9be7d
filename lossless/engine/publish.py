"""How every step's output comes into existence: a partial directory, a manifest, one rename.

A step writes into `.<name>.partial-<tag>` beside its target, where the tag depends only on the
step's fingerprint: a rerun of the same step finds it again (a merge resumes at its first
unfinished shard, a train step at its last checkpoint). When the step has finished,
`publish` writes `lossless-manifest.json` (every file's size and sha256) last and renames the
directory into place, so a path with the target's name is always a finished output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

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


def check_not_input(target: Path, input_dirs: Sequence[Path], step: str | None = None) -> None:
    """Refuse a target that is, contains or lies inside an input: publishing replaces the
    target whole, which would delete (or write into) what the step reads."""
    out = Path(target).resolve()
    for given in input_dirs:
        source = Path(given).resolve()
        if out == source or out in source.parents or source in out.parents:
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


def write_manifest(directory: Path, fingerprint: str, known: Mapping[str, str] = {}) -> None:
    """Every file's sha256 (`known` ones, e.g. shards hashed while written, are not re-read)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST:
            files[rel] = known.get(rel) or sha256_file(path)
    manifest = {"fingerprint": fingerprint, "versions": versions(), "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def publish(
    partial: Path, target: Path, fingerprint: str, known: Mapping[str, str] | None = None
) -> Path:
    """Manifest last, then the partial dir renamed to `target`. An older output there is moved
    aside first and deleted only after the new one is in place."""
    write_manifest(partial, fingerprint, known or {})
    target.parent.mkdir(parents=True, exist_ok=True)
    old: Path | None = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(partial, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
