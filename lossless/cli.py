"""Command line: `lossless run | validate | plan | chat | lock`, dispatching to `lossless.commands.*`.

Only argument parsing lives here, so `lossless --help` and `lossless validate` stay instant: each
command module is imported when its command runs, and heavy libraries only inside those.
Exit codes: 0 ok, 2 invalid recipe (or bad command line), 1 failed run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lossless import __version__

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe (or any mergekit config): train, apply, merge, eval",
        description="Run every step of RECIPE that is not already fresh. Accepts mergekit-yaml's flags.",
    )
    p.add_argument("recipe", help="recipe or mergekit config (YAML)")
    p.add_argument(
        "out", nargs="?", help="output directory of the final merge (overrides `output:`)"
    )
    _add_common(p)
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument(
        "--work-dir", help="where step outputs are kept (default: .lossless/ beside the recipe)"
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
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the hub (off by default)",
    )
    p.add_argument(
        "--locked", action="store_true", help="refuse to run if an input differs from RECIPE.lock"
    )
    p.add_argument(
        "--transformers-cache", help="hub cache directory (mergekit's flag; same as HF_HUB_CACHE)"
    )
    # mergekit-yaml flags that change nothing on a CPU-only streaming executor: accepted, noted.
    for flag in ("--low-cpu-memory", "--cuda", "--clone-tensors", "--read-to-gpu", "--multi-gpu"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
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
    p.add_argument("--device", default=None, help=argparse.SUPPRESS)


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check recipes without running them (fast, no torch, for CI)",
        description="Validate recipes: schema, then semantic checks. Exit 2 if any has an error.",
    )
    p.add_argument("files", nargs="+", help="recipe files")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument(
        "--resolve",
        action="store_true",
        help="also read each model's config.json (local dirs or the hub cache; never weights)",
    )
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on internal errors")


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="show the step DAG: inputs, outputs, what is fresh, what will run"
    )
    p.add_argument("recipe")
    p.add_argument("--format", choices=["text", "dot", "json"], default="text")
    p.add_argument("--params", action="store_true", help="show resolved merge parameters per layer")
    p.add_argument(
        "--work-dir", help="where step outputs are kept (default: .lossless/ beside the recipe)"
    )
    p.add_argument("--debug", action="store_true")


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="talk to a model or a recipe step's output in the terminal")
    p.add_argument("model", help="model directory, hub id, or RECIPE:STEP")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--prompt", help="one-shot: answer this prompt and exit")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--debug", action="store_true")


def _add_lock(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lock",
        help="pin every input of a recipe (hub commits, file hashes) in RECIPE.lock",
        description="Write RECIPE.lock: the commit of every hub reference and the content hash of "
        "every local input. `lossless run --locked` refuses to run if anything differs.",
    )
    p.add_argument("recipe")
    p.add_argument("--check", action="store_true", help="compare with RECIPE.lock; exit 1 if stale")
    p.add_argument("--transformers-cache", help="hub cache directory (same as HF_HUB_CACHE)")
    p.add_argument("--debug", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossless",
        description="Keep improving an open LLM without it forgetting: one YAML recipe to train, "
        "apply, merge and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"lossless {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_validate(sub)
    _add_plan(sub)
    _add_chat(sub)
    _add_lock(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"lossless.commands.{args.command}")
    try:
        return int(module.main(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
