"""Command line: `lossless run | validate | plan | chat | lock | push | schema`.

Each command module in `lossless.commands` owns its arguments (`add_parser`) and its work
(`main(args) -> exit code`); heavy libraries are imported only inside those, so `--help` and
`validate` stay instant. This is the one place where errors become exit codes:
    0 ok · 1 a failed run or a breached gate · 2 an invalid recipe or command line
and where a traceback is shown, only with `--debug`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import NoReturn

from lossless import __version__
from lossless.commands import chat, lock, plan, push, run, schema, validate
from lossless.errors import EXIT_FAILED, EXIT_INVALID, GateFailed, LosslessError, RecipeInvalid

COMMANDS = (run, validate, plan, chat, lock, push, schema)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossless",
        description="Keep improving an open LLM without it forgetting: one YAML recipe to train, "
        "apply, merge and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"lossless {__version__}")
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(_WithParents(sub, debug))
    return parser


class _WithParents:
    """Adds the shared `--debug` to every subcommand's parser."""

    def __init__(self, sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
        self.sub, self.parent = sub, parent

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        return self.sub.add_parser(name, parents=[self.parent], **kwargs)  # type: ignore[arg-type]


def _say(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a bad command line exits 2 here (argparse)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RecipeInvalid as invalid:
        from lossless.validation.formatting import render_problems

        print(render_problems(invalid.problems, "text"), file=sys.stderr)
        return EXIT_INVALID
    except GateFailed as failed:
        _say(f"[red bold]gate failed:[/] {_escape(failed)}")
        return EXIT_FAILED
    except LosslessError as error:
        if debug:
            traceback.print_exc()
        _say(f"[red]error:[/] {_escape(error)}")
        return error.exit_code
    except OSError as error:  # a full disk, a permission, a path: named, with what to do
        if debug:
            traceback.print_exc()
        from lossless.engine.io_errors import from_os_error

        _say(f"[red]error:[/] {_escape(from_os_error(error))}")
        return EXIT_FAILED
    except Exception as error:  # a bug of ours: say so plainly; the traceback with --debug
        if debug:
            raise
        command = " ".join(["lossless", *(argv if argv is not None else sys.argv[1:])])
        _say(
            f"[red]internal error:[/] {_escape(f'{type(error).__name__}: {error}')}\n"
            f"while running: {_escape(command)}\n(rerun with --debug for a traceback, and report it)"
        )
        return EXIT_FAILED


def entry() -> NoReturn:
    """The console script (and `python -m lossless`): main(), then a fast exit.

    After a merge the interpreter's own teardown (torch's, numba's and every module's objects)
    takes 0.5-0.9 s; mypy skips it the same way. What a normal exit does for the user's files
    still runs first: the atexit handlers (logging's flush, temporary directories, libraries'
    own) and the flush of stdout and stderr. While another thread still runs, the normal exit
    (which waits for it) is taken instead.
    """
    code = main()
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _escape(value: object) -> str:
    from rich.markup import escape

    return escape(str(value))


if __name__ == "__main__":
    entry()
