"""`freeze: {first_layers: N, patterns: [substrings]}` — parameters that do not train, so the
early layers (where general features live) cannot drift."""

from __future__ import annotations

import re
from typing import Any

_LAYER = re.compile(r"\.layers\.(\d+)\.")  # model.layers.3.mlp.up_proj.weight → 3


def freeze(model: Any, first_layers: int = 0, patterns: list[str] | None = None) -> list[str]:
    """Set requires_grad False on decoder layers < first_layers and on names containing any
    pattern (e.g. "embed_tokens"); returns the frozen names (sorted)."""
    frozen = []
    for name, param in model.named_parameters():
        m = _LAYER.search(name)
        if (m and int(m.group(1)) < first_layers) or any(p in name for p in patterns or []):
            param.requires_grad_(False)
            frozen.append(name)
    return sorted(frozen)
