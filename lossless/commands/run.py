"""`lossless run RECIPE [OUT]`: validate, then run every step that is not fresh."""

from __future__ import annotations

import argparse
import sys
import traceback

from lossless.errors import GateFailed, LosslessError, RecipeInvalid

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

# mergekit-yaml flags that mean nothing for a streaming CPU executor: accepted, with a note.
_NO_OP_FLAGS = {
    "low_cpu_memory": "--low-cpu-memory: lossless always streams tensor by tensor",
    "cuda": "--cuda: merges run on the CPU (the math is memory-bound; a GPU would not help)",
    "clone_tensors": "--clone-tensors: tensors are never shared between outputs here",
    "read_to_gpu": "--read-to-gpu: merges run on the CPU",
    "multi_gpu": "--multi-gpu: merges run on the CPU",
}


def _error(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(text)


def main(args: argparse.Namespace) -> int:
    from lossless.commands.common import recipe_file
    from lossless.validation.formatting import render_problems
    from lossless.validation.recipe_check import load_recipe

    try:
        path = recipe_file(args.recipe, cache_dir=args.transformers_cache, quiet=args.quiet)
        recipe, warnings = load_recipe(path, strict=args.strict)
    except RecipeInvalid as invalid:
        print(render_problems(invalid.problems, "text"), file=sys.stderr)
        return EXIT_INVALID
    except LosslessError as error:
        _error(f"[red]error:[/] {error}")
        return EXIT_INVALID
    if warnings:
        print(render_problems(warnings, "text"), file=sys.stderr)
    for flag, note in _NO_OP_FLAGS.items():
        if getattr(args, flag, False) and not args.quiet:
            _error(f"[dim]note: {note}[/]")
    if args.device and args.device != "cpu" and not args.quiet:
        _error(f"[dim]note: --device {args.device}: merges run on the CPU[/]")
    if not args.safe_serialization and not args.quiet:
        _error("[dim]note: --no-safe-serialization: outputs are always safetensors[/]")

    try:
        from pathlib import Path

        from lossless.engine.runner import Runner, RunOptions
        from lossless.tensors.sizes import parse_shard_size

        options = RunOptions(
            work_dir=Path(args.work_dir) if args.work_dir else None,
            out=Path(args.out) if args.out else None,
            force=frozenset(args.force),
            only=frozenset(args.only),
            seed=args.random_seed,
            shard_size=parse_shard_size(args.out_shard_size),
            num_threads=args.num_threads,
            allow_crimes=args.allow_crimes,
            copy_tokenizer=args.copy_tokenizer,
            write_model_card=args.write_model_card,
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
            quiet=args.quiet,
            cache_dir=args.transformers_cache,
            locked=args.locked,
        )
        Runner(recipe, options).run()
    except GateFailed as failed:
        _error(f"[red bold]gate failed:[/] {failed}")
        return EXIT_FAILED
    except LosslessError as error:
        if args.debug:
            traceback.print_exc()
        _error(f"[red]error:[/] {error}")
        return EXIT_FAILED
    except Exception as error:  # an internal error: say so plainly, traceback with --debug
        if args.debug:
            raise
        _error(
            f"[red]internal error:[/] {type(error).__name__}: {error}\n(run with --debug for a traceback)"
        )
        return EXIT_FAILED
    return EXIT_OK
