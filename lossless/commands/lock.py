"""`lossless lock RECIPE`: pin every input of a recipe in `RECIPE.lock` (or `--check` it).

Hub references resolve to commits through the model-info endpoint (nothing is downloaded); local
inputs are hashed. `--check` compares instead of writing and exits 1 on any difference: the same
test `lossless run --locked` makes before it starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lossless.engine.lockfile import check_locked, lock_path, resolve_inputs, write_lock
from lossless.validation.recipe_check import load_recipe


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This command's arguments (the CLI assembles its parser from every command's)."""
    p = sub.add_parser(
        "lock",
        help="pin every input of a recipe (hub commits, file hashes) in RECIPE.lock",
        description="Write RECIPE.lock: the commit of every hub reference and the content hash of "
        "every local input. `lossless run --locked` refuses to run if anything differs.",
    )
    p.add_argument("recipe")
    p.add_argument("--check", action="store_true", help="compare with RECIPE.lock; exit 1 if stale")
    p.add_argument("--transformers-cache", help="hub cache directory (same as HF_HUB_CACHE)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    recipe = Path(args.recipe)
    cache = getattr(args, "transformers_cache", None)
    built, _ = load_recipe(recipe)
    entries = resolve_inputs(built, cache_dir=cache)
    if args.check:
        check_locked(recipe, entries)
        print(f"{lock_path(recipe)}: up to date ({len(entries)} inputs)")
        return 0
    target = write_lock(recipe, entries)
    hub = sum(1 for e in entries.values() if e["kind"] == "hub")
    print(f"wrote {target}: {hub} hub repo(s) pinned, {len(entries) - hub} local input(s) hashed")
    return 0
