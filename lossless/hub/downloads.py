"""Before a run: what the hub downloads will weigh, and whether the disk can hold the run.

`plan_downloads` asks the hub (or, offline, the cache) for each file's size without downloading;
`lossless plan` prints it and the runner checks the free disk space against it before any work.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from lossless.errors import LosslessError
from lossless.hub.failures import hub_error
from lossless.hub.repos import (
    HubRef,
    default_cache_dir,
    download_patterns,
    hub_endpoint,
    is_offline,
    parse_hub_ref,
    resolve_commit,
)


class PlannedDownload(NamedTuple):
    repo_id: str
    revision: str  # as written ("main" when none was)
    commit: str
    bytes: int  # total size of the files a step needs
    fetch_bytes: int  # of those, the bytes not yet in the cache


def plan_downloads(
    refs: Iterable[str], *, cache_dir: str | None = None, allow_pickle: bool = False
) -> list[PlannedDownload]:
    """Every hub repo in `refs` with its commit and the bytes a run would fetch (for `lossless plan`).

    Online: the repo-info endpoint with file metadata, one small request per repo, no download.
    Offline: the commit and file sizes the cache recorded when the repo was downloaded.
    """
    cache = str(cache_dir or default_cache_dir())
    planned: list[PlannedDownload] = []
    seen: set[tuple[str, str]] = set()
    for text in refs:
        ref = parse_hub_ref(text)
        if ref is None:
            continue
        revision = ref.revision or "main"
        if (ref.repo_id, revision) in seen:
            continue
        seen.add((ref.repo_id, revision))
        offline = is_offline()
        try:
            commit, sizes = (_cached_sizes if offline else _remote_sizes)(ref, revision, cache)
        except LosslessError:
            raise
        except Exception as error:
            raise hub_error(
                error, ref.repo_id, revision, cache=cache, offline=offline, endpoint=hub_endpoint()
            ) from error
        total = fetch = 0
        for path, size in _wanted(sizes, allow_pickle, ref.repo_type):
            total += size
            if not _is_cached(ref, path, commit, cache):
                fetch += size
        planned.append(PlannedDownload(ref.repo_id, revision, commit, total, fetch))
    return planned


def _remote_sizes(ref: HubRef, revision: str, cache: str) -> tuple[str, dict[str, int]]:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint())
    info = api.repo_info(
        ref.repo_id, revision=revision, repo_type=ref.repo_type, files_metadata=True
    )
    assert info.sha is not None
    siblings = getattr(info, "siblings", None) or []
    return info.sha, {s.rfilename: s.size or 0 for s in siblings}


def _cached_sizes(ref: HubRef, revision: str, cache: str) -> tuple[str, dict[str, int]]:
    from huggingface_hub import get_cached_repo_tree

    commit = resolve_commit(_unparse(ref, revision), cache_dir=cache)
    try:
        files = get_cached_repo_tree(
            ref.repo_id, revision=commit, cache_dir=cache, repo_type=ref.repo_type
        )
    except Exception:  # no listing recorded: fall back to what the snapshot folder holds
        folder = Path(cache) / "--".join([f"{ref.repo_type}s", *ref.repo_id.split("/")])
        snapshot = folder / "snapshots" / commit
        return commit, {
            p.relative_to(snapshot).as_posix(): p.stat().st_size
            for p in snapshot.rglob("*")
            if p.is_file()
        }
    return commit, {f.path: f.size for f in files}


def _unparse(ref: HubRef, revision: str) -> str:
    prefix = "hf://datasets/" if ref.repo_type == "dataset" else ""
    return f"{prefix}{ref.repo_id}@{revision}"


def _wanted(sizes: dict[str, int], allow_pickle: bool, repo_type: str) -> list[tuple[str, int]]:
    from fnmatch import fnmatch

    allow, ignore = download_patterns(allow_pickle, repo_type)
    return [
        (path, size)
        for path, size in sorted(sizes.items())
        if any(fnmatch(path, p) for p in allow) and not any(fnmatch(path, p) for p in ignore)
    ]


def _is_cached(ref: HubRef, path: str, commit: str, cache: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        ref.repo_id, path, cache_dir=cache, revision=commit, repo_type=ref.repo_type
    )
    return isinstance(found, str)


def describe_downloads(planned: list[PlannedDownload]) -> list[str]:
    """Lines for `lossless plan`: each repo, revision, commit and bytes, then the total.

    e.g. "Qwen/Qwen2-7B@main (commit 453ed1575b73): fetch 15.2 GB of 15.2 GB"
    """
    lines = []
    for p in planned:
        fetch = "in cache" if p.fetch_bytes == 0 else f"fetch {human_bytes(p.fetch_bytes)}"
        lines.append(
            f"{p.repo_id}@{p.revision} (commit {p.commit[:12]}): {fetch} of {human_bytes(p.bytes)}"
        )
    total = sum(p.fetch_bytes for p in planned)
    lines.append(f"total to download: {human_bytes(total)} from {len(planned)} repo(s)")
    return lines


def check_disk_space(path: str | Path, needed_bytes: int) -> None:
    """Fail before starting if the filesystem holding `path` has less than `needed_bytes` free."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise LosslessError(
            f"not enough disk space in {path}: this run needs about {human_bytes(needed_bytes)} "
            f"(downloads + outputs), {human_bytes(free)} is free",
            hint="free some space, or point --work-dir / HF_HOME (--transformers-cache) at a larger disk",
        )


def human_bytes(n: int) -> str:
    """1234567 → '1.2 MB' (decimal units, as the Hub shows sizes)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
