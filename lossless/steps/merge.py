"""A merge step: inputs → (vocabularies lined up) → tensor plan → streamed output directory."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.engine.resolver import merge_inputs, sources_for
from lossless.recipe.model import MergeStep, ModelRef

if TYPE_CHECKING:
    from lossless.engine.context import StepContext
    from lossless.tensors.source import TensorSource


def _base_key(step: MergeStep) -> str:
    if step.base_model is not None:
        return str(step.base_model)
    return str(merge_inputs(step)[0])


def _tokenizer_setting(step: MergeStep) -> tuple[str | None, Mapping[str, Any], int | None]:
    """(source, tokens, pad_to_multiple_of) from `tokenizer_source` or the `tokenizer:` block."""
    if step.tokenizer:
        block = step.tokenizer
        return (
            str(block.get("source", "union")),
            dict(block.get("tokens") or {}),
            block.get("pad_to_multiple_of"),
        )
    return step.tokenizer_source, {}, None


def _chat_templates(tokenizer_dirs: Mapping[str, Path]) -> list[str | None]:
    """Each input's chat template as its tokenizer files hold it (None where it has none)."""
    templates: list[str | None] = []
    for path in tokenizer_dirs.values():
        template = None
        jinja = path / "chat_template.jinja"
        config = path / "tokenizer_config.json"
        if jinja.is_file():
            template = jinja.read_text()
        elif config.is_file():
            try:
                value = json.loads(config.read_text()).get("chat_template")
                template = value if isinstance(value, str) else None
            except json.JSONDecodeError:
                template = None
        templates.append(template)
    return templates


def check_inputs_at_start(step: MergeStep, ctx: StepContext) -> None:
    """The recipe's checks on inputs only a run can see (downloads, earlier steps' outputs),
    located at the recipe's file:line:col; exit 2 before anything is written."""
    from lossless.recipe.model import ApplyStep
    from lossless.validation.inputs_check import check_step, run_locator

    resolver = ctx.resolver
    lazy = [
        ref.name
        for ref in merge_inputs(step)
        if isinstance(resolver.step_for(ref), ApplyStep) and ref.name not in resolver.step_dirs
    ]
    check_step(
        ctx.recipe.path,
        {step.name, *lazy},
        run_locator(resolver),
        allow_crimes=ctx.options.allow_crimes,
    )


def run(step: MergeStep, ctx: StepContext) -> dict[str, str]:
    """Merge into `ctx.out_dir`; returns the shard hashes computed while writing."""
    if step.search is not None:  # many trial merges, the best one into ctx.out_dir
        from lossless.search.stage import run_search

        return run_search(step, ctx)
    from lossless.hub.cards import lineage
    from lossless.merge.chat_templates import resolve_chat_template
    from lossless.merge.output import assemble_output
    from lossless.merge.planner import build_plan
    from lossless.merge.vocab import (
        align_vocabularies,
        build_vocabulary,
        mismatch_error,
        vocab_sizes,
    )

    resolver, options = ctx.resolver, ctx.options
    check_inputs_at_start(step, ctx)
    sources: Mapping[str, TensorSource] = sources_for(step, resolver)
    base_key = _base_key(step)
    refs = {str(r): r for r in merge_inputs(step)}
    tokenizer_dirs = {key: resolver.tokenizer_dir(ref) for key, ref in refs.items()}
    source, tokens, pad = _tokenizer_setting(step)
    sizes = vocab_sizes(sources)

    with tempfile.TemporaryDirectory(prefix="lossless-tokenizer-") as scratch:
        tokenizer_dir: Path | None = (
            tokenizer_dirs.get(base_key) if options.copy_tokenizer else None
        )
        config_updates: dict[str, Any] = {}
        if source is not None:
            if source not in ("base", "union"):
                source = str(ModelRef.parse(source))
            vocab = build_vocabulary(
                source, tokenizer_dirs, sizes, base_key, tokens=tokens, pad_to_multiple_of=pad
            )
            sources = align_vocabularies(vocab, sources, base_key)
            tokenizer_dir = vocab.save(Path(scratch))
            config_updates["vocab_size"] = vocab.size
        elif len(set(sizes.values())) > 1:
            raise mismatch_error(sizes)

        plan = build_plan(step, sources, allow_crimes=options.allow_crimes)
        template = None
        if step.chat_template:
            template = resolve_chat_template(step.chat_template, _chat_templates(tokenizer_dirs))
        if config_updates:
            plan = replace(plan, config_updates={**plan.config_updates, **config_updates})
        return assemble_output(
            plan,
            sources,
            ctx.out_dir,
            name=ctx.target.name,
            recipe_text=ctx.recipe_text,
            tokenizer_dir=tokenizer_dir,
            chat_template=template,
            base_models=[str(step.base_model)] if step.base_model else [],
            method=step.merge_method,
            mergekit_config=ctx.recipe.is_plain_mergekit,
            write_model_card=options.write_model_card,
            lock_text=ctx.lock_text,
            lineage=lineage(ctx.recipe, step.name),
            shard_size=options.shard_size,
            num_threads=options.num_threads,
            memory=options.memory,
            device=options.device,
            seed=options.seed,
            quiet=options.quiet,
        )
