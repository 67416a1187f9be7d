"""`lossless push RECIPE|DIR REPO`: publish a finished result to a hub model repo.

From a recipe: its final merge (or `--step NAME`), with a card rebuilt for the repo (base models,
datasets, eval results as `model-index`), the recipe and its lock. Refused when the step is not
fresh or a gate of an eval of it failed, unless `--force`. From a directory: its files as they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lossless.errors import EXIT_OK, UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This command's arguments (the CLI assembles its parser from every command's)."""
    p = sub.add_parser(
        "push",
        help="upload a finished model or adapter, its card, recipe and lock to a hub repo",
        description="Upload the final merge of RECIPE (or --step NAME), or a model/adapter "
        "directory, to the hub model repo REPO (created if missing) as one commit. From a "
        "recipe, the step must be finished and every eval of it must have passed its gates.",
        epilog="examples:\n  lossless push recipe.yaml me/qwen2-merged\n"
        "  lossless push recipe.yaml me/new-skill-lora --step new_skill\n"
        "  lossless push ./out/merged me/qwen2-merged --private",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="RECIPE|DIR", help="a recipe file or a model directory")
    p.add_argument("repo", metavar="REPO", help="hub repo id, org/name")
    p.add_argument("--step", help="the step whose output to push (default: the final merge)")
    p.add_argument("--work-dir", help="the run's work dir (default: .lossless/ beside the recipe)")
    p.add_argument(
        "--out", help="the final merge's output, if the run was given one on the command line"
    )
    p.add_argument(
        "--force", action="store_true", help="push even if a gate failed or an eval has not run"
    )
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be uploaded; upload nothing"
    )
    p.add_argument("--transformers-cache", help="hub cache directory (same as HF_HUB_CACHE)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from lossless.hub.push import describe, plan_dir_push, plan_recipe_push, upload
    from lossless.recipe.references import looks_like_hub_id

    if not looks_like_hub_id(args.repo):
        raise UsageError(f"{args.repo!r} is not a hub repo id", hint="write it as org/name")
    source = Path(args.source)
    if source.is_dir():
        if args.step:
            raise UsageError("--step is for a recipe; a directory is pushed whole")
        plan = plan_dir_push(source, args.repo)
    else:
        from lossless.validation.recipe_check import load_recipe

        recipe, _ = load_recipe(source)
        plan = plan_recipe_push(
            recipe,
            args.repo,
            step_name=args.step,
            work_dir=Path(args.work_dir) if args.work_dir else None,
            out=Path(args.out) if args.out else None,
            force=args.force,
            cache_dir=args.transformers_cache,
        )
    for line in describe(plan):
        print(line)
    if args.dry_run:
        for path in sorted(plan.files):
            print(f"  {path}")
        return EXIT_OK
    url = upload(plan, private=args.private, revision=args.revision)
    print(f"pushed: {url}")
    return EXIT_OK
