"""Is a published output still what its manifest says? Fresh means verified, not only recorded.

Before a step is skipped, every file its `lossless-manifest.json` lists must exist with its
recorded size (cheap: one stat per file, always); with `--verify`, its sha256 too (reads every
byte). Each difference is a reason for `plan` and `run`, e.g.
"output shard model-00007-of-00025.safetensors missing".
"""

from __future__ import annotations

from pathlib import Path

from lossless.engine.publish import MANIFEST, read_manifest
from lossless.tensors.writer import sha256_file


def _what(rel: str) -> str:
    return "shard" if rel.endswith(".safetensors") else "file"


def output_differences(directory: Path, *, full: bool = False) -> list[str]:
    """Why `directory` is not the output its manifest describes; [] when it is."""
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"output {MANIFEST} missing or unreadable"]
    sizes = manifest.get("sizes") or {}  # manifests written before sizes were recorded: none
    reasons = []
    for rel, sha in sorted(manifest["files"].items()):
        path = Path(directory) / rel
        try:
            size = path.stat().st_size
        except OSError:
            reasons.append(f"output {_what(rel)} {rel} missing")
            continue
        if rel in sizes and size != sizes[rel]:
            reasons.append(f"output {_what(rel)} {rel} is {size:,} bytes, recorded {sizes[rel]:,}")
        elif full and sha256_file(path) != sha:
            reasons.append(f"output {_what(rel)} {rel} does not match its recorded sha256")
    return reasons
