"""NearSwap: take the other model's value where it is within `t` of the base's.

Per entry, weight = clamp(t / |base − other|, 0, 1): entries closer than t are swapped to the
other model entirely; farther ones move towards it by t / distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def nearswap(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """base 1.0, other 1.5, t 0.1 → weight 0.2 → 1.1; |difference| floored at 1e-6."""
    (other,) = tensors
    t = float(params["t"])
    weight = (t / torch.abs(base - other).clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * other + (1 - weight) * base
