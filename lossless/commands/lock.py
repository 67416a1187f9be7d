"""`lossless lock RECIPE`: pin every input of a recipe in `RECIPE.lock` (or `--check` it).

Hub references resolve to commits through the model-info endpoint (nothing is downloaded); local
inputs are hashed. `--check` compares instead of writing and exits 1 on any difference: the same
test `lossless run --locked` makes before it starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lossless.engine.lockfile import check_locked, lock_path, resolve_inputs, write_lock
from lossless.errors import LosslessError


def load_documents(recipe: Path) -> list[dict[str, Any]]:
    """The recipe's YAML documents (a lock needs only the references, not a validated recipe)."""
    import yaml

    try:
        documents = [d for d in yaml.safe_load_all(recipe.read_text()) if d is not None]
    except FileNotFoundError:
        raise LosslessError(f"{recipe} does not exist") from None
    except yaml.YAMLError as error:
        raise LosslessError(
            f"{recipe} is not valid YAML: {error}", hint=f"run `lossless validate {recipe}`"
        ) from None
    if not all(isinstance(d, dict) for d in documents):
        raise LosslessError(f"{recipe}: every YAML document must be a mapping")
    return documents


def main(args: argparse.Namespace) -> int:
    recipe = Path(args.recipe)
    cache = getattr(args, "transformers_cache", None)
    try:
        entries = resolve_inputs(recipe, load_documents(recipe), cache_dir=cache)
        if args.check:
            check_locked(recipe, entries)
            print(f"{lock_path(recipe)}: up to date ({len(entries)} inputs)")
            return 0
        target = write_lock(recipe, entries)
    except LosslessError as error:
        if getattr(args, "debug", False):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    hub = sum(1 for e in entries.values() if e["kind"] == "hub")
    print(f"wrote {target}: {hub} hub repo(s) pinned, {len(entries) - hub} local input(s) hashed")
    return 0
