"""What the commands share: turning a RECIPE argument into a local recipe file."""

from __future__ import annotations

import argparse
from pathlib import Path


def recipe_file(argument: str, *, cache_dir: str | None = None, quiet: bool = False) -> Path:
    """A recipe path as given, or the recipe of a model repo (`hub:org/name` or a local clone).

    A model's recipe is copied (with its lock, if the repo has one) into `./reproduce-<name>/` so
    the run's lock file, work dir and output land in the user's directory, not in the hub cache
    or someone else's clone.
    """
    from lossless.hub.reproduce import find_lock, find_recipe, is_hub_recipe

    path = Path(argument)
    if is_hub_recipe(argument):
        from lossless.hub.reproduce import fetch_recipe

        repo_dir, _, text = fetch_recipe(argument, cache_dir=cache_dir, quiet=quiet)
        name = argument.removeprefix("hub:").split("@")[0].replace("/", "__")
    elif path.is_dir():
        repo_dir = path
        _, text = find_recipe(path)
        name = path.resolve().name
    else:
        return path
    target = Path.cwd() / f"reproduce-{name}"
    target.mkdir(parents=True, exist_ok=True)
    recipe = target / "recipe.yaml"
    recipe.write_text(text)
    lock = find_lock(repo_dir)
    if lock:
        (target / "recipe.lock").write_text(lock)
    return recipe


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that load models and show progress."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
