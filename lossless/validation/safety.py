"""Rules that keep a recipe from elsewhere harmless on the machine that runs it.

1. Writes stay inside the allowed roots (the work dir and the output dir): a path *from the recipe*
   may not be absolute, climb out with `..`, or pass through a symlink that leads outside. A path
   the user typed on the command line is theirs to choose and is not restricted.
2. Options that run code (remote modelling code, unpickling) are only ever enabled by a CLI flag.
   A recipe that asks for one gets a message naming the flag the user may choose to pass; the
   recipe's own value is never used.
Typical use by the runner: `check_output_path(recipe["output"], [work_dir, recipe_dir],
from_cli=False, base=recipe_dir)` and `check_output_path(args.out, [], from_cli=True)`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError, Problem, YamlPath, format_yaml_path

_FLAG_HINT = "if you trust this recipe and its models, pass {flag} on the command line"

# key (lower case, `-` read as `_`) → (value that asks for code execution, the CLI flag)
CODE_OPTIONS: dict[str, tuple[bool, str]] = {
    "trust_remote_code": (True, "--trust-remote-code"),  # runs the repo's modelling .py files
    "allow_code_execution": (True, "--trust-remote-code"),  # lm_eval code tasks run model output
    "confirm_run_unsafe_code": (True, "--trust-remote-code"),
    "allow_pickle": (True, "--allow-pickle"),  # unpickling runs arbitrary code
    "lazy_unpickle": (True, "--allow-pickle"),  # mergekit's name for the same
    "weights_only": (False, "--allow-pickle"),  # torch.load(weights_only=False)
    "use_safetensors": (False, "--allow-pickle"),  # transformers falls back to pickle .bin
}


def check_output_path(
    path: str | Path,
    allowed_roots: Sequence[str | Path],
    from_cli: bool,
    *,
    base: str | Path | None = None,
    what: str = "output path",
    root_names: str | None = None,
) -> Path:
    """The absolute path to write to, or a LosslessError if a recipe's path leaves the roots.

    Relative paths are taken from `base` (default: the first root). `what` names the setting in
    messages, e.g. "`output:` of recipe.yaml"; `root_names` names the roots in messages (default:
    their paths).
    """
    if from_cli:
        return Path(path).expanduser().absolute()
    text = str(path)
    fix = "pass the path on the command line instead (`lossless run RECIPE OUT`)"
    if not allowed_roots:
        raise LosslessError(
            f"{what} {text!r}: a recipe may not choose where to write here", hint=fix
        )
    roots = [Path(r).expanduser().absolute() for r in allowed_roots]
    shown = root_names or _list_roots(roots)
    if Path(text).is_absolute() or text.startswith("~"):
        raise LosslessError(
            f"{what} {text!r} is an absolute path: a recipe may only write inside " + shown,
            hint=fix,
        )
    start = Path(base).expanduser().absolute() if base is not None else roots[0]
    lexical = Path(os.path.normpath(start / text))
    if not any(_inside(lexical, root) for root in roots):
        raise LosslessError(
            f"{what} {text!r} climbs out with `..` to {lexical}: a recipe may only write inside "
            + shown,
            hint=fix,
        )
    real = lexical.resolve()  # follows every symlink on the way, existing or not
    if not any(_inside(real, root.resolve()) for root in roots):
        link = _first_escaping_link(lexical, [r.resolve() for r in roots])
        raise LosslessError(
            f"{what} {text!r} goes through the symlink {link} to {real}, outside " + shown,
            hint=fix + ", or remove the symlink",
        )
    return real


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _list_roots(roots: list[Path]) -> str:
    return " and ".join(str(r) for r in roots)


def _first_escaping_link(path: Path, real_roots: list[Path]) -> Path:
    """The first component of `path` that is a symlink leading outside the roots."""
    for candidate in [*reversed(path.parents), path]:
        if candidate.is_symlink():
            target = candidate.resolve()
            if not any(_inside(target, root) for root in real_roots):
                return candidate
    return path


def code_execution_requests(documents: Sequence[Any]) -> list[tuple[YamlPath, str]]:
    """Every place a recipe asks for code execution: (YAML path from the document index, flag).

    >>> code_execution_requests([{"models": [{"model": "x", "trust_remote_code": True}]}])
    [((0, 'models', 0, 'trust_remote_code'), '--trust-remote-code')]
    """
    found: list[tuple[YamlPath, str]] = []

    def walk(value: Any, path: YamlPath) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                option = CODE_OPTIONS.get(str(key).lower().replace("-", "_"))
                if option is not None and _truthy(item) == option[0] and item is not None:
                    found.append(((*path, key), option[1]))
                walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))

    for index, document in enumerate(documents):
        walk(document, (index,))
    return found


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "on", "1"}
    return bool(value)


def code_execution_problems(
    documents: Sequence[Any],
    file: str,
    granted: Collection[str] = (),
    positions: Mapping[YamlPath, tuple[int, int]] | None = None,
) -> list[Problem]:
    """One Problem per request whose flag was not passed (`granted`: flags given on the CLI).

    `positions` maps a YAML path (without the document index) to (line, col) when the loader
    knows them. With several documents, the path keeps the index so each place is distinct.
    """
    problems = []
    for path, flag in code_execution_requests(documents):
        if flag in granted:
            continue  # the user chose it on the command line; the recipe's key changes nothing
        shown = path[1:] if len(documents) == 1 else path
        line, col = (positions or {}).get(shown, (0, 0))
        problems.append(
            Problem(
                message=f"`{format_yaml_path(path[1:])}` asks to run code from elsewhere; a recipe "
                f"cannot enable this itself",
                file=file,
                path=shown,
                line=line,
                col=col,
                hint=_FLAG_HINT.format(flag=flag),
                code="code-execution",
            )
        )
    return problems
