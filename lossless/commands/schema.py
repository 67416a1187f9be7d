"""`lossless schema`: print the recipe JSON Schema (draft-07) that editors and `validate` use.

The text is the schema file as shipped, byte for byte, so `lossless schema > recipe.schema.json`
gives an editor the same schema as the `$id` URL, offline and matching the installed version.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lossless.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This command's arguments (the CLI assembles its parser from every command's)."""
    p = sub.add_parser(
        "schema",
        help="print the recipe JSON Schema (draft-07) for editors",
        description="Print the recipe JSON Schema (draft-07, a description on every key) that "
        "yaml-language-server and other editors use for completion, checks and hover help.",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write it to FILE instead of stdout (an existing FILE that differs is refused)",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from lossless.recipe.schema import schema_path

    text = schema_path().read_text(encoding="utf-8")
    if args.output is None:
        sys.stdout.write(text)
        return 0
    target = Path(args.output)
    if target.is_dir():
        raise UsageError(
            f"--output {target}: is a directory", hint="name a file, e.g. recipe.schema.json"
        )
    if target.exists() and target.read_text(encoding="utf-8", errors="replace") != text:
        raise UsageError(
            f"--output {target}: the file exists and is not this schema; not overwritten",
            hint="remove it first, or choose another path",
        )
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)  # one rename: never a half-written schema
    print(f"wrote {target}", file=sys.stderr)
    return 0
