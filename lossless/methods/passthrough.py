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
    """The tensor itself, so output bytes equal input bytes when no scale is set.

    mergekit multiplies whenever `scale` is given (even 1.0); x·1.0 has the same values, so
    returning x unchanged for 1.0 keeps the bytes and the numbers.
    """
    (tensor,) = tensors
    scale = model_params[0].get("scale") if model_params else None
    if scale is None or float(scale) == 1.0:
        return tensor
    return tensor * float(scale)
