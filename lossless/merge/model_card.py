"""The output's README.md, for callers that know only model names (tests, `build_output`).

The card itself is `lossless/hub/cards.py` (huggingface_hub's ModelCard: base models, relation,
tags, datasets, eval results, the recipe in a ```yaml block that `lossless run hub:org/name`
finds again). A run passes the step's `Lineage`, walked through the recipe's steps; without one,
the names given here are sorted into hub ids and local names.
"""

from __future__ import annotations

from collections.abc import Sequence

from lossless.hub.cards import Lineage, display_name, render_card


def render_model_card(
    recipe_text: str,
    *,
    name: str,
    base_models: Sequence[str] = (),
    merged_models: Sequence[str] = (),
    method: str | None = None,
    lock_text: str | None = None,
    lineage: Lineage | None = None,
) -> str:
    """README.md text. With no `lineage`, `base_models` then `merged_models` are the inputs."""
    if lineage is None:
        lineage = names_lineage([*base_models, *merged_models], method)
    return render_card(recipe_text, name=name, lineage=lineage, lock_text=lock_text)


def names_lineage(names: Sequence[str], method: str | None) -> Lineage:
    from lossless.recipe.references import is_explicit_path, looks_like_hub_id

    unique = list(dict.fromkeys(names))
    hub = [n for n in unique if looks_like_hub_id(n) and not is_explicit_path(n)]
    local = [display_name(n) for n in unique if n not in hub]
    return Lineage(
        hub_models=tuple(hub),
        local_models=tuple(dict.fromkeys(local)),
        methods=(method,) if method else (),
        relation="merge",
    )
