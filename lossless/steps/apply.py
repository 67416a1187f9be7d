"""An apply step written out as a full model: only when asked (`save: true`) or when a train or
eval step needs real files. Inside merges the adapted model stays a lazy view (engine/resolver.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.recipe.model import ApplyStep, ModelRef
from lossless.tensors.safetensors_header import SAFETENSORS_TO_TORCH

if TYPE_CHECKING:
    from lossless.engine.context import StepContext


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


def run(step: ApplyStep, ctx: StepContext) -> dict[str, str]:
    """The adapted model as real files in `ctx.out_dir` (a passthrough of the lazy view)."""
    from lossless.hub.cards import lineage
    from lossless.merge.output import assemble_output
    from lossless.validation.inputs_check import check_step, run_locator

    resolver, options = ctx.resolver, ctx.options
    # Inputs only the run can see (an earlier step's output as `to`), checked before writing.
    check_step(ctx.recipe.path, {step.name}, run_locator(resolver), allow_crimes=True)
    key = step.name
    source = resolver.tensor_source(ModelRef(step.name))
    return assemble_output(
        copy_plan(key, source),
        {key: source},
        ctx.out_dir,
        name=ctx.target.name,
        recipe_text=ctx.recipe_text,
        tokenizer_dir=resolver.tokenizer_dir(step.to),
        base_models=[str(step.to)],
        method="apply",
        lock_text=ctx.lock_text,
        lineage=lineage(ctx.recipe, step.name),
        write_model_card=options.write_model_card,
        shard_size=options.shard_size,
        num_threads=options.num_threads,
        memory=options.memory,
        device=options.device,
        quiet=options.quiet,
    )
