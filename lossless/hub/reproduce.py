"""Reproduce a model from a hub repo (or a local clone): find the recipe it was made with.

Where a recipe is looked for, first hit wins:
    1. `lossless.yaml`            written by `lossless run` into every output
    2. `mergekit_config.yml`      written by mergekit (a bare mergekit config is a valid recipe)
    3. `README.md`                the first ```yaml block that looks like a recipe: mergekit's and
                                  lossless's model cards both embed the config that way
The lock (`lossless.engine.lockfile`, or the first ```json block of the card with `"lossless_lock"`) travels
the same way, so `lossless run hub:org/name --locked` checks it got the same inputs.
`fetch_recipe` downloads only those few files, never weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

RECIPE_FILES = ("lossless.yaml", "mergekit_config.yml")
LOCK_FILE = "lossless.lock"
CARD = "README.md"
RECIPE_KEYS = {"merge_method", "train", "apply", "eval"}  # any one of these makes a recipe

# ```yaml ... ``` (or ```yml); the body is group 2. Non-greedy, so each block is matched alone.
_FENCE = re.compile(r"^```[ \t]*(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def looks_like_recipe(text: str) -> bool:
    """True if `text` parses as YAML and a document has a merge method or train/apply/eval steps.

    A card is someone else's text: it goes through the same guarded reader as a recipe (alias,
    depth and size limits), so a hostile card cannot hang `lossless reproduce`."""
    from lossless.recipe.yaml_io import parse_documents

    documents, problems = parse_documents(text)
    if problems:
        return False
    return any(isinstance(d, dict) and RECIPE_KEYS & set(d) for d, _positions in documents)


def card_blocks(card: str, language: str) -> list[str]:
    """The bodies of the fenced blocks of `card` in `language` (yaml also matches yml)."""
    wanted = {"yaml", "yml"} if language == "yaml" else {language}
    return [m.group(2) for m in _FENCE.finditer(card) if m.group(1).lower() in wanted]


def find_recipe(repo_dir: Path) -> tuple[str, str]:
    """(file name, recipe text) from a model repo directory; a clear error if there is none."""
    repo_dir = Path(repo_dir)
    for name in RECIPE_FILES:
        if (repo_dir / name).is_file():
            return name, (repo_dir / name).read_text()
    card = repo_dir / CARD
    if card.is_file():
        for block in card_blocks(card.read_text(), "yaml"):
            if looks_like_recipe(block):
                return CARD, block
    raise LosslessError(
        f"no recipe found in {repo_dir}: looked for {', '.join(RECIPE_FILES)} and a ```yaml block "
        f"with merge_method or train/apply/eval in {CARD}",
        hint="the model was not made with lossless or mergekit, or its card does not include the "
        "config; ask its author for the recipe",
    )


def find_lock(repo_dir: Path) -> str | None:
    """The lock text that travels with a recipe, if the repo has one."""
    repo_dir = Path(repo_dir)
    if (repo_dir / LOCK_FILE).is_file():
        return (repo_dir / LOCK_FILE).read_text()
    card = repo_dir / CARD
    if card.is_file():
        for block in card_blocks(card.read_text(), "json"):
            try:
                data: Any = json.loads(block)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and "lossless_lock" in data:
                return block
    return None


def is_hub_recipe(argument: str) -> bool:
    """`lossless run hub:org/name[@rev]` names a model repo whose recipe is to be reproduced."""
    return argument.startswith("hub:")


def fetch_recipe(
    argument: str, *, cache_dir: str | None = None, quiet: bool = False
) -> tuple[Path, str, str]:
    """Download only the recipe-bearing files of `hub:org/name[@rev]`: (repo dir, file, text).

    The recipe file is then also readable at `repo_dir / file`, beside `find_lock(repo_dir)`.
    """
    from lossless.hub.repos import download_files, parse_hub_ref

    ref = parse_hub_ref(argument)
    if ref is None:
        raise LosslessError(
            f"{argument!r} is not a hub model reference",
            hint="write it as hub:org/name or hub:org/name@revision",
        )
    files = [*RECIPE_FILES, LOCK_FILE, CARD]
    resolved = download_files(ref, None, files, ["*/*"], cache_dir=cache_dir, quiet=quiet)
    name, text = find_recipe(resolved.path)
    return resolved.path, name, text


def card_section(recipe_text: str, lock_text: str | None = None, repo_id: str | None = None) -> str:
    """Markdown for an output's model card: the recipe (and lock) where `find_recipe` finds them."""
    command = f"lossless run hub:{repo_id}" if repo_id else "lossless run lossless.yaml"
    parts = [
        "## Recipe",
        "",
        f"This model was made with lossless from the recipe below. Reproduce it with `{command}`.",
        "",
        "```yaml",
        recipe_text.rstrip("\n"),
        "```",
    ]
    if lock_text:
        parts += ["", "### Lock (resolved inputs)", "", "```json", lock_text.rstrip("\n"), "```"]
    return "\n".join(parts) + "\n"
