"""`lossless run RECIPE [OUT]`: validate, then run every step that is not fresh."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from lossless.commands.common import add_common
from lossless.errors import EXIT_OK, GateFailed, LosslessError, UsageError

if TYPE_CHECKING:
    from lossless.engine.context import Launch

# mergekit-yaml flags that mean nothing for lossless's streaming executor: accepted, noted.
# (`--cuda` and `--read-to-gpu` choose the GPU, as `--device cuda`: merge/device.py.)
_NO_OP_FLAGS = {
    "low_cpu_memory": "--low-cpu-memory: lossless always streams tensor by tensor",
    "clone_tensors": "--clone-tensors: tensors are never shared between outputs here",
    "multi_gpu": "--multi-gpu: lossless merges on one device (the first GPU with --device cuda)",
}


def _note(text: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[dim]note: {escape(text)}[/]")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This command's arguments (the CLI assembles its parser from every command's)."""
    p = sub.add_parser(
        "run",
        help="run a recipe (or any mergekit config): train, apply, merge, eval",
        description="Run every step of RECIPE that is not already fresh. Accepts mergekit-yaml's flags.",
    )
    p.add_argument("recipe", help="recipe or mergekit config (YAML)")
    p.add_argument(
        "out", nargs="?", help="output directory of the final merge (overrides `output:`)"
    )
    add_common(p)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe value, checked like the file (e.g. models[0].parameters.weight=0.7)",
    )
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument(
        "--work-dir",
        help="where step outputs are kept (default: .lossless/<recipe name>/ beside the recipe)",
    )
    p.add_argument(
        "--force", action="append", default=[], metavar="STEP", help="rerun STEP even if fresh"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STEP",
        help="run only STEP (and what it needs)",
    )
    p.add_argument(
        "--random-seed", type=int, default=None, help="seed for randomised merge methods"
    )
    p.add_argument(
        "--out-shard-size", default="5B", help="parameters per output shard (1B, 500M; default 5B)"
    )
    p.add_argument(
        "-j", "--num-threads", type=int, default=None, help="threads for merge compute and I/O"
    )
    p.add_argument(
        "--allow-crimes",
        action="store_true",
        help="allow merging models of different architectures/shapes",
    )
    p.add_argument("--copy-tokenizer", dest="copy_tokenizer", action="store_true", default=True)
    p.add_argument("--no-copy-tokenizer", dest="copy_tokenizer", action="store_false")
    p.add_argument("--write-model-card", dest="write_model_card", action="store_true", default=True)
    p.add_argument("--no-write-model-card", dest="write_model_card", action="store_false")
    p.add_argument(
        "--allow-pickle",
        "--lazy-unpickle",
        dest="allow_pickle",
        action="store_true",
        help="allow .bin (pickle) checkpoints, loaded with weights_only=True",
    )
    p.add_argument(
        "--allow-non-finite",
        action="store_true",
        help="merge weights that hold NaN or Inf (refused by default, naming the tensor)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the hub (off by default)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="publish over an existing folder lossless did not write (it is moved aside to "
        "NAME.replaced-DATE, never deleted)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="before skipping a fresh step, check every output file's sha256 (sizes are always checked)",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for another run holding the lock, do not fail"
    )
    p.add_argument(
        "--no-push",
        dest="push",
        action="store_false",
        help="run without uploading the recipe's `push_to_hub:` outputs",
    )
    p.add_argument(
        "--force-push",
        action="store_true",
        help="upload the `push_to_hub:` outputs even when a gate failed (as `lossless push --force`)",
    )
    p.add_argument(
        "--locked", action="store_true", help="refuse to run if an input differs from RECIPE.lock"
    )
    p.add_argument(
        "--transformers-cache", help="hub cache directory (mergekit's flag; same as HF_HUB_CACHE)"
    )
    # mergekit-yaml flags that change nothing on lossless's streaming executor: accepted, noted.
    for flag in ("--low-cpu-memory", "--clone-tensors", "--multi-gpu"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--cuda", action="store_true", help="merge on the GPU (mergekit's flag; --device cuda)"
    )
    p.add_argument(
        "--read-to-gpu",
        action="store_true",
        help="mergekit's flag: as --device cuda (inputs always go to the GPU as they are read)",
    )
    p.add_argument(
        "--safe-serialization",
        dest="safe_serialization",
        action="store_true",
        default=True,
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--no-safe-serialization",
        dest="safe_serialization",
        action="store_false",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--memory",
        default=None,
        help="peak memory budget for merges (4G, 512M; default: half the available memory, "
        "2 to 16G): tensors too large for it are merged a block of rows at a time",
    )
    p.add_argument(
        "--launcher",
        choices=("accelerate", "torchrun"),
        default=None,
        help="run train steps in several processes under `accelerate launch` or `torchrun` "
        "(DDP, or the step's fsdp:/deepspeed:); every other step runs in this process",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="with --launcher: processes per train step (one per GPU; default: the launcher's)",
    )
    p.add_argument(
        "--config-file",
        default=None,
        metavar="FILE",
        help="with --launcher accelerate: its config file (as `accelerate config` writes it)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default=None,
        help="where merge math runs (default cpu; auto: cuda when torch sees a GPU); "
        "cuda without one is refused before any work",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lossless.commands.common import recipe_file, silence_third_party
    from lossless.engine.runner import Runner, RunOptions
    from lossless.tensors.sizes import parse_shard_size
    from lossless.validation.formatting import render_problems
    from lossless.validation.recipe_check import load_recipe

    if args.quiet:
        silence_third_party()
    from lossless.merge.device import resolve_device

    device = resolve_device(args.device, cuda=args.cuda, read_to_gpu=args.read_to_gpu)
    launch = _launch(args)
    try:
        path = recipe_file(args.recipe, cache_dir=args.transformers_cache, quiet=args.quiet)
    except LosslessError as error:  # nothing readable to run: the input itself is wrong
        raise UsageError(error.message, hint=error.hint) from None
    from lossless.recipe.overrides import parse_overrides

    # Validation reads every local input's config.json and safetensors headers (no weights): a
    # recipe that does not fit its inputs stops here, exit 2, before any work. With OUT given,
    # the recipe's own `output:` is not written to, so it is not judged.
    recipe, warnings = load_recipe(
        path,
        strict=args.strict,
        overwrite=args.overwrite,
        check_output=args.out is None,
        overrides=parse_overrides(args.overrides),
        allow_crimes=args.allow_crimes,
    )
    if warnings:
        print(render_problems(warnings, "text"), file=sys.stderr)
    push = args.push
    if push and recipe.pushes and path != Path(args.recipe):
        # A recipe taken from a model repo names its author's repos: reproducing it must not
        # push over them. Edited and run as a file of your own, its `push_to_hub:` is yours.
        push = False
        repos = ", ".join(t.repo for t in recipe.pushes.values())
        _note(
            f"push_to_hub ({repos}) is not used for a recipe from {args.recipe}: "
            f"push the result with `lossless push {path} ORG/NAME`"
        )
    if not args.quiet:
        for flag, note in _NO_OP_FLAGS.items():
            if getattr(args, flag, False):
                _note(note)
        if not device.is_cpu:
            _note(f"merges run on {device.describe()}")
        if not args.safe_serialization:
            _note("--no-safe-serialization: outputs are always safetensors")
    memory = None
    if args.memory:
        from lossless.merge.budget import parse_memory

        try:
            memory = parse_memory(args.memory)
        except LosslessError as error:
            raise UsageError(error.message, hint=error.hint) from None
    options = RunOptions(
        memory=memory,
        device=device,
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
        allow_non_finite=args.allow_non_finite,
        trust_remote_code=args.trust_remote_code,
        quiet=args.quiet,
        cache_dir=args.transformers_cache,
        locked=args.locked,
        overwrite=args.overwrite,
        verify=args.verify,
        wait=args.wait,
        launch=launch,
        push=push,
        force_push=args.force_push,
    )
    import time

    from lossless.commands.summary import print_summary

    runner = Runner(recipe, options)
    started = time.monotonic()
    try:
        results = runner.run()
    except GateFailed:
        if not args.quiet:
            print_summary(runner, None, time.monotonic() - started)
        raise
    if not args.quiet:
        print_summary(runner, results, time.monotonic() - started)
    return EXIT_OK


def _launch(args: argparse.Namespace) -> Launch | None:
    """--launcher, --num-processes, --config-file → Launch (checked), or None without them."""
    from pathlib import Path

    from lossless.engine.context import Launch
    from lossless.training.launch import launcher_problem

    if args.launcher is None:
        for flag, value in (
            ("--num-processes", args.num_processes),
            ("--config-file", args.config_file),
        ):
            if value is not None:
                raise UsageError(
                    f"{flag} is a launcher's setting, and no --launcher was given",
                    hint="add --launcher accelerate (or torchrun)",
                )
        return None
    launch = Launch(
        args.launcher,
        args.num_processes,
        Path(args.config_file) if args.config_file else None,
    )
    problem = launcher_problem(launch)
    if problem is not None:
        raise UsageError(problem[0], hint=problem[1])
    return launch
