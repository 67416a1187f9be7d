"""Passthrough: the single input tensor unchanged (or multiplied by `scale`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def passthrough(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The tensor itself, so output bytes equal input bytes when no scale is set."""
    (tensor,) = tensors
    scale = model_params[0].get("scale", 1.0) if model_params else 1.0
    if scale is None or float(scale) == 1.0:
        return tensor
    return tensor * float(scale)
