"""Rows of a hub dataset (or of a local dataset directory) through `datasets.load_dataset`.

`data: teknium/OpenHermes-2.5`, `org/set@v1`, `{path: org/set, split: test, subset: main}`:
the run resolves the revision to a commit once (`lossless lock` records it; `--locked` loads
the locked one) and the step loads exactly that commit, so a branch that moves mid-run cannot
change what was trained on. `datasets` does the rest, as for any Hugging Face user: which files
make which split and subset (the repo's README `configs:`, or its file layout), the downloads
into the hub cache (HF_HOME / HF_HUB_CACHE, the user's token from HF_TOKEN or `hf auth login`),
the Arrow files in its own cache (HF_DATASETS_CACHE), offline reruns from them
(HF_HUB_OFFLINE=1). It reads those variables when it is imported, that is as the command starts.
Dataset loading scripts (`*.py`) never run: `datasets` 4 and later have no way to run them, 3
only with `trust_remote_code=True`, which lossless never passes.

A directory on disk is read the same way: a clone of a dataset repo (its data files and README)
through `load_dataset`, an output of `Dataset.save_to_disk` through `load_from_disk`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_SPLIT = "train"
FIX = (
    "check the id, split and subset on the dataset's hub page; set HF_TOKEN (or `hf auth "
    "login`) for a private or gated dataset; or use a local file (`data: data/train.jsonl`)"
)


class HubDataError(LosslessError):
    """A hub dataset that cannot be read; `repo_id` lets the step name the recipe's line."""

    def __init__(self, message: str, hint: str | None, repo_id: str) -> None:
        super().__init__(message, hint=hint)
        self.repo_id = repo_id


def load_hub_rows(
    repo_id: str,
    *,
    revision: str | None = None,
    split: str | None = None,
    subset: str | None = None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Every row of `split` (default train) of `subset` of the dataset at `revision`."""
    split = split or DEFAULT_SPLIT
    what = f"hub dataset {repo_id}@{revision or 'main'}" + (f" (subset {subset})" if subset else "")
    datasets = _datasets(what)
    try:
        with _quiet(quiet):
            table = datasets.load_dataset(repo_id, subset, revision=revision, split=split)
    except Exception as error:
        raise _readable(error, what, split, subset, repo_id) from None
    return list(table.to_list())


def load_directory_rows(
    path: Path, *, split: str | None = None, subset: str | None = None, quiet: bool = False
) -> list[dict[str, Any]]:
    """Rows of a local dataset directory: a `save_to_disk` output, or data files + README."""
    split = split or DEFAULT_SPLIT
    what = f"dataset directory {path}"
    datasets = _datasets(what)
    try:
        with _quiet(quiet):
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                table = datasets.load_from_disk(str(path))
                if isinstance(table, datasets.DatasetDict):
                    if split not in table:
                        raise ValueError(
                            f'Unknown split "{split}". Should be one of {sorted(table)}.'
                        )
                    table = table[split]
            else:
                table = datasets.load_dataset(str(path), subset, split=split)
    except Exception as error:
        raise _readable(error, what, split, subset, str(path)) from None
    return list(table.to_list())


def remember_revision(repo_id: str, revision: str, commit: str, cache: Path) -> None:
    """Record in the hub cache that `revision` (a branch or tag) is `commit`, as huggingface_hub
    does for a download by branch name: the step loads by commit, and without this an offline
    rerun could not resolve `main` again (`hub/repos.resolve_commit` reads these refs)."""
    if _COMMIT.match(revision):
        return
    refs = cache / "--".join(["datasets", *repo_id.split("/")]) / "refs"
    ref = refs / revision
    try:
        if ref.is_file() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    except OSError:
        pass  # a read-only cache only costs the offline rerun its shortcut


def _datasets(what: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise LosslessError(
            f"cannot read {what}: the `datasets` library is not installed",
            hint="pip install datasets",
        ) from None
    return datasets


def _readable(
    error: Exception, what: str, split: str, subset: str | None, repo_id: str
) -> LosslessError:
    """datasets' exceptions as what happened and how to fix it."""
    from datasets.exceptions import DatasetNotFoundError

    text = str(error).strip()
    if isinstance(error, DatasetNotFoundError):
        return HubDataError(f"cannot read {what}: {text}", FIX, repo_id)
    if isinstance(error, ValueError) and text.startswith("Unknown split"):
        return HubDataError(
            f"{what} has no split {split!r}: {text}", "set `split:` to one of them", repo_id
        )
    if isinstance(error, ValueError) and "BuilderConfig" in text:
        return HubDataError(
            f"{what} has no subset {subset!r}: {text}",
            "set `subset:` to one of the available ones",
            repo_id,
        )
    if isinstance(error, ConnectionError):
        return HubDataError(
            f"cannot reach {what}, and it is not in the datasets cache: {text}",
            "check the network (or unset HF_HUB_OFFLINE) and run again; pin `revision:` to a "
            "commit that is cached to run offline; or use a local file (`data: data/train.jsonl`)",
            repo_id,
        )
    cause = error.__cause__ or error.__context__
    detail = f"{text} ({type(cause).__name__}: {cause})" if cause else text
    return HubDataError(f"cannot read {what}: {type(error).__name__}: {detail}", FIX, repo_id)


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """With -q, no download or "Generating train split" bars and no datasets warnings."""
    if not quiet:
        yield
        return
    import datasets.utils as datasets_utils
    from datasets.utils import logging as datasets_logging
    from huggingface_hub.utils import disable_progress_bars

    bars_were_on = not datasets_utils.are_progress_bars_disabled()
    verbosity = datasets_logging.get_verbosity()
    if bars_were_on:
        datasets_utils.disable_progress_bars()
    datasets_logging.set_verbosity_error()
    try:
        with disable_progress_bars():
            yield
    finally:
        datasets_logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets_utils.enable_progress_bars()
