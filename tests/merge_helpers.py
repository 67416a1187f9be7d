"""Hand-built merge plans over tiny checkpoints, for the executor and output tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.tensors.checkpoint import Checkpoint


def linear_plan(
    sources: Mapping[str, Checkpoint],
    weights: Mapping[str, float],
    out_dtype: str = "float32",
    method: str = "linear",
    params: Mapping[str, Any] | None = None,
) -> MergePlan:
    """One `method` job per tensor of the first source, reading every model in `weights`."""
    first = next(iter(sources.values()))
    jobs = []
    for name in first.tensor_names():
        jobs.append(
            TensorJob(
                output=name,
                method=method,
                sources=tuple(TensorRef(model, name) for model in weights),
                model_params=tuple({"weight": w} for w in weights.values()),
                params=dict(params or {}),
                shape=first.shape(name),
                out_dtype=out_dtype,
            )
        )
    return MergePlan(jobs=tuple(jobs), config_source=next(iter(sources)))


def passthrough_plan(sources: Mapping[str, Checkpoint], model: str, out_dtype: str) -> MergePlan:
    src = sources[model]
    jobs = tuple(
        TensorJob(
            output=name,
            method="passthrough",
            sources=(TensorRef(model, name),),
            model_params=({"scale": 1.0},),
            shape=src.shape(name),
            out_dtype=out_dtype,
            compute_dtype=out_dtype,
        )
        for name in src.tensor_names()
    )
    return MergePlan(jobs=jobs, config_source=model)
