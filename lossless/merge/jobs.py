"""The tensor plan's vocabulary: pure data, no tensors, no I/O.

The planner (`merge/planner.py`) turns a MergeStep and the inputs' tensor names/shapes into a list of
`TensorJob`s; the executor (`merge/executor.py`) computes each one from `TensorSource`s and writes
it. Keeping the plan as data makes it printable (`lossless plan --params`) and testable alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorRef:
    """A tensor of one input model: `model` is the key of its TensorSource, `tensor` its name."""

    model: str
    tensor: str


@dataclass(frozen=True)
class TensorJob:
    """How to compute one output tensor.

    `sources` follow the method table's convention: one per input model, without the base when
    the method takes a base; `model_params[i]` are the resolved scalars of `sources[i]`.
    """

    output: str
    method: str
    sources: tuple[TensorRef, ...]
    base: TensorRef | None = None
    model_params: tuple[Mapping[str, Any], ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] = ()
    out_dtype: str = "float32"  # torch dtype name of the written tensor
    compute_dtype: str = "float32"  # torch dtype name the math runs in
    layer: int | None = None  # output layer index, for display; None for non-layer tensors
    # Axis indexed by token id (0 for embeddings and output heads), else None. With a
    # `tokenizer_source` the inputs may differ along it; the executor aligns their rows.
    vocab_axis: int | None = None


@dataclass(frozen=True)
class MergePlan:
    """Everything the executor needs, and the output config's changed keys."""

    jobs: tuple[TensorJob, ...]
    config_updates: Mapping[str, Any] = field(default_factory=dict)  # e.g. num_hidden_layers
    config_source: str | None = None  # model key whose config.json is copied
