"""The output's README.md: Hugging Face front matter plus the recipe that made the model.

The recipe sits in a ```yaml block so that `lossless run hub:org/name` (and people) can find it
again; the front matter's `base_model`, `tags` and `library_name` are what the hub indexes.
JSON scalars and lists are valid YAML, so values are written with `json.dumps` to quote safely.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

TAGS = ("merge", "lossless")


def render_model_card(
    recipe_text: str,
    *,
    name: str,
    base_models: Sequence[str] = (),
    merged_models: Sequence[str] = (),
    method: str | None = None,
    lock_text: str | None = None,
) -> str:
    """README.md text. `base_models` go to the front matter; `merged_models` are listed."""
    front = ["---"]
    if base_models:
        front.append("base_model:")
        front += [f"- {json.dumps(m)}" for m in base_models]
    front.append("tags:")
    front += [f"- {tag}" for tag in TAGS]
    front += ["library_name: transformers", "---", ""]
    body = [f"# {name}", "", "This model was made with lossless"]
    body[-1] += f" using the `{method}` merge method." if method else "."
    if merged_models:
        body += ["", "Models merged:", ""] + [f"- {m}" for m in merged_models]
    body += ["", "## Recipe", "", "```yaml", recipe_text.rstrip("\n"), "```", ""]
    if lock_text:
        body += ["## Lock", "", "```json", lock_text.rstrip("\n"), "```", ""]
    return "\n".join(front + body)
