"""An apply step written out as a full model: only when asked (`save: true`) or when a train or
eval step needs real files. Inside merges the adapted model stays a lazy view (resolve.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.recipe.model import ApplyStep, ModelRef
from lossless.tensors.checkpoint import SAFETENSORS_TO_TORCH

if TYPE_CHECKING:
    from lossless.engine.runner import Runner


def copy_plan(key: str, source) -> MergePlan:  # type: ignore[no-untyped-def]
    """Every tensor of `source` unchanged, in its stored dtype (a passthrough per tensor)."""
    jobs = []
    for name in source.tensor_names():
        dtype = SAFETENSORS_TO_TORCH.get(source.dtype(name), "float32")
        jobs.append(
            TensorJob(
                output=name,
                method="passthrough",
                sources=(TensorRef(key, name),),
                model_params=({},),
                shape=tuple(source.shape(name)),
                out_dtype=dtype,
                compute_dtype=dtype,
            )
        )
    return MergePlan(jobs=tuple(jobs), config_source=key)


def materialise(step: ApplyStep, runner: Runner, output: Path, fingerprint: str) -> None:
    from lossless.merge.output import build_output

    resolver = runner.resolver
    key = step.name
    source = resolver.tensor_source(ModelRef(step.name))
    build_output(
        copy_plan(key, source),
        {key: source},
        output,
        fingerprint=fingerprint,
        recipe_text=Path(runner.recipe.path).read_text(),
        input_dirs=runner.input_dirs(step),
        tokenizer_dir=resolver.tokenizer_dir(step.to),
        base_models=[str(step.to)],
        method="apply",
        write_model_card=runner.options.write_model_card,
        shard_size=runner.options.shard_size,
        num_threads=runner.options.num_threads,
        quiet=runner.options.quiet,
    )
