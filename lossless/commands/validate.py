"""`lossless validate FILES...`: schema + semantic checks; no torch, no downloads. Exit 0 or 2."""

from __future__ import annotations

import argparse
import json
import sys

from lossless.errors import Problem, RecipeInvalid
from lossless.validation.formatting import problem_dict, render_problems


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This command's arguments (the CLI assembles its parser from every command's)."""
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow an `output:` that holds files lossless did not write (as `run --overwrite`)",
    )
    p.add_argument(
        "--allow-crimes",
        action="store_true",
        help="allow models of different architectures/sizes (as `lossless run --allow-crimes`)",
    )
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from lossless.validation.recipe_check import load_recipe

    all_problems: list[Problem] = []
    failed: list[str] = []
    for file in args.files:
        try:
            from lossless.commands.common import recipe_file

            path = recipe_file(file, quiet=True)  # hub:org/name or a model repo clone, too
            _, problems = load_recipe(
                path,
                strict=args.strict,
                resolve=args.resolve,
                overwrite=args.overwrite,
                allow_crimes=args.allow_crimes,
            )
        except RecipeInvalid as invalid:
            problems = invalid.problems
            failed.append(file)
        except Exception as error:  # an internal bug must still not hide the other files
            if args.debug:
                raise
            problems = [
                Problem(
                    f"internal error while validating: {error!r}",
                    file=file,
                    code="internal",
                    hint="rerun with --debug and report it",
                )
            ]
            failed.append(file)
        all_problems += problems
    if args.format == "json":
        print(
            json.dumps(
                {
                    "files": args.files,
                    "invalid": failed,
                    "problems": [problem_dict(p) for p in all_problems],
                },
                indent=2,
            )
        )
    elif all_problems:
        print(render_problems(all_problems, args.format), file=sys.stdout)
    if args.format == "text" and not failed:
        print(f"ok: {len(args.files)} recipe(s) valid")
    return 2 if failed else 0
