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


def silence_third_party() -> None:
    """`-q` means quiet: no tqdm bars from huggingface_hub, transformers (which asks the hub's
    switch) or datasets, and only their errors. Set before they are imported, and again on the
    live modules in case they already are."""
    import os
    import sys

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TQDM_DISABLE"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
