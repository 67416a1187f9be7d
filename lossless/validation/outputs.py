"""The one rule for where an output may go, used by `validate` (as Problems) and by `run`.

Publishing replaces a target directory whole, so a target is refused when it
1. is or contains the recipe's folder, the work dir or the user's home, or is, contains or lies
   inside an input model's directory (publishing would delete it, or write into what is read);
2. exists and is not a previous lossless output of *this* recipe: no `lossless-manifest.json`,
   the manifest of another recipe (outside the work dir, which recipes sharing it share), or
   files its manifest does not list (the user's). `--overwrite`
   allows it, and even then the old folder is moved aside, never deleted (`engine/publish.py`).
A path written in a recipe must also stay inside the recipe's folder and the work dir
(`safety.check_output_path`); a path typed on the command line is the user's choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.engine.context import default_work_dir
from lossless.errors import LosslessError, Problem, UsageError
from lossless.recipe.yaml_io import source_line

_SHOWN = 5  # files named in a refusal; the rest are counted
OWN_DIR_HINT = "choose an output directory of its own, e.g. `merged/` beside the recipe"
OVERWRITE_HINT = (
    "choose a new or empty directory, or pass --overwrite (the folder is then moved aside to "
    "NAME.replaced-DATE, never deleted)"
)


@dataclass(frozen=True)
class OutputRule:
    """What the rule needs to know about a run: the recipe file, the work dir, the inputs."""

    recipe: Path
    work_dir: Path
    input_dirs: Sequence[Path] = ()
    overwrite: bool = False

    def problems(self, target: Path, shown: str | None = None) -> list[tuple[str, str]]:
        """Every reason `target` is refused, as (message, hint); [] when it is allowed.
        `shown` is how messages name the target (default: its absolute path)."""
        name = shown or str(target)
        why = self.forbidden(Path(target).resolve())
        if why:
            return [(f"{name} {why}", OWN_DIR_HINT)]
        why = None if self.overwrite else self.not_ours(Path(target))
        return [(f"{name} {why}", OVERWRITE_HINT)] if why else []

    def check(self, target: Path) -> None:
        """For `run`: raise a UsageError (exit 2) naming every reason."""
        found = self.problems(target)
        if found:
            raise UsageError("; ".join(m for m, _ in found), hint=found[0][1])

    def forbidden(self, out: Path) -> str | None:
        """Rule 1, or None."""
        named = [
            (self.recipe.resolve().parent, "the recipe's folder"),
            (self.work_dir, "the work dir"),
            (Path.home(), "your home directory"),
        ]
        for other, what in named:
            other = Path(other).resolve()
            if out == other:
                return f"is {what}: publishing would replace all of it"
            if out in other.parents:
                return f"contains {what} ({other}): publishing would replace all of it"
        from lossless.engine.publish import overlapping_input

        given = overlapping_input(out, self.input_dirs)
        return f"is or contains the input {given} (or lies inside it)" if given else None

    def not_ours(self, target: Path) -> str | None:
        """Rule 2, or None."""
        from lossless.engine.publish import read_manifest, unlisted_files

        if not target.exists():
            return None
        if not target.is_dir():
            return "exists and is not a directory"
        manifest = read_manifest(target)
        made_by = (manifest or {}).get("recipe") or {}
        inside_work_dir = Path(self.work_dir).resolve() in target.resolve().parents
        # The work dir is lossless's own: recipes that share one (`--work-dir`) share its steps.
        if made_by and made_by.get("path") != str(self.recipe.resolve()) and not inside_work_dir:
            return f"is the output of another recipe, {made_by.get('path')}"
        lost = unlisted_files(target, manifest)
        if not lost:
            return None
        more = f" and {len(lost) - _SHOWN} more" if len(lost) > _SHOWN else ""
        listed = ", ".join(lost[:_SHOWN]) + more
        why = (
            "no lossless-manifest.json" if manifest is None else "files its manifest does not list"
        )
        return (
            f"already exists with {why}: publishing would replace {len(lost)} file(s) lossless "
            f"did not write ({listed})"
        )


def output_problems(
    documents: Sequence[Any],
    positions: Sequence[Mapping[Any, tuple[int, int]]],
    file: str,
    lines: list[str],
    *,
    input_dirs: Sequence[Path] = (),
    overwrite: bool = False,
    shown_file: str | None = None,
) -> list[Problem]:
    """`validate`'s view of the rule: one Problem per reason an `output:` is refused, at its
    line (the work dir is the default `.lossless/<recipe name>/` beside the recipe). `file` is the recipe's
    path; `shown_file` how messages name it."""
    from lossless.validation.safety import check_output_path

    recipe = Path(file).absolute()
    rule = OutputRule(recipe, default_work_dir(recipe), input_dirs, overwrite)
    problems = []
    for doc, pos in zip(documents, positions, strict=True):
        value = doc.get("output") if isinstance(doc, dict) else None
        if not isinstance(value, str):
            continue
        line, col = pos.get(("output",), (0, 0))
        try:
            target = check_output_path(
                value,
                [recipe.parent, rule.work_dir],
                False,
                base=recipe.parent,
                what="`output:`",
                root_names="the recipe's folder and its work dir .lossless/",
            )
            found = rule.problems(target, shown=f"`output: {value}`")
        except LosslessError as error:
            found = [(error.message, error.hint or "")]
        problems += [
            Problem(
                message,
                file=shown_file or file,
                path=("output",),
                line=line,
                col=col,
                source_line=source_line(lines, line),
                hint=hint or None,
                code="output-path",
            )
            for message, hint in found
        ]
    return problems
