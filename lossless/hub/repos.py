"""Model and dataset references on the Hugging Face Hub: parse, plan, resolve into the standard cache.

A reference is `org/name`, `org/name@revision` (branch, tag or commit) or `hf://datasets/org/name`;
an existing local directory always wins over a hub id (as in mergekit). Downloads go through
huggingface_hub's `snapshot_download` into its cache (HF_HOME / HF_HUB_CACHE, or mergekit's
`--transformers-cache`), honour HF_HUB_OFFLINE and the user's token (HF_TOKEN or `hf auth login`),
and fetch only what a step needs: config, tokenizer, generation config and safetensors. Pickle
checkpoints (`*.bin`, `*.pt`, ...) can run code when loaded, so they are skipped unless the user
passes `--allow-pickle`. Every client error becomes a `LosslessError` naming the repo and the fix.

huggingface_hub reads its environment once, at import; this module reads HF_ENDPOINT,
HF_HUB_OFFLINE and the cache variables at call time and passes them explicitly, so a variable set
by a wrapper script (or a test) after import is still honoured.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from lossless.errors import LosslessError
from lossless.hub.failures import Offline, hub_error

# What a merge/train/eval step reads from a model or adapter repo (top level only: `*/*` is ignored
# so `original/consolidated.pth` style extras are never fetched).
NEEDED_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",  # sentencepiece
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",  # PEFT adapters
]
# Files that unpickle on load (arbitrary code execution from a stranger's repo).
PICKLE_FILES = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.bin.index.json"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name, as the Hub allows
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


class HubRef(NamedTuple):
    repo_id: str  # "Qwen/Qwen2-0.5B"
    revision: str | None  # "main", "v1.0", a 40-hex commit, or None (= main)
    repo_type: str = "model"  # "model" | "dataset"


class ResolvedModel(NamedTuple):
    path: Path  # a snapshot folder in the cache, or the local directory itself
    repo_id: str | None  # None for a local directory
    commit: str | None  # the 40-hex commit the revision resolved to; None for a local directory


class PlannedDownload(NamedTuple):
    repo_id: str
    revision: str  # as written ("main" when none was)
    commit: str
    bytes: int  # total size of the files a step needs
    fetch_bytes: int  # of those, the bytes not yet in the cache


def parse_hub_ref(text: str) -> HubRef | None:
    """`org/name@rev` → HubRef; None if `text` is not shaped like a hub id (or exists locally).

    >>> parse_hub_ref("Qwen/Qwen2-7B@main")
    HubRef(repo_id='Qwen/Qwen2-7B', revision='main', repo_type='model')
    """
    repo_type = "model"
    body = text.removeprefix("hub:").removeprefix("hf://")
    explicit = body != text  # hub:/hf:// prefixes say "hub" even if a local path has that name
    if body.startswith("datasets/"):
        repo_type, body = "dataset", body[len("datasets/") :]
    elif body.startswith("models/"):
        body = body[len("models/") :]
    name, at, revision = body.partition("@")
    if not _REPO_ID.match(name) or (at and not revision):
        return None
    if not explicit and Path(text).expanduser().exists():
        return None
    return HubRef(name, revision if at else None, repo_type)


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.lower() in _TRUE or constants.is_offline_mode()


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def default_cache_dir() -> Path:
    """The hub cache, with huggingface_hub's precedence: HF_HUB_CACHE, then HF_HOME/hub."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def download_patterns(allow_pickle: bool, repo_type: str = "model") -> tuple[list[str], list[str]]:
    """(allow_patterns, ignore_patterns) for snapshot_download.

    A dataset repo is fetched whole (data files have any name), except pickles and `*.py`
    loading scripts, which would run code.
    """
    if repo_type == "dataset":
        return ["*"], ["*.py", *([] if allow_pickle else PICKLE_FILES)]
    if allow_pickle:
        return NEEDED_FILES + PICKLE_FILES, ["*/*"]
    return NEEDED_FILES, ["*/*", *PICKLE_FILES]


def resolve_model(
    name: str,
    revision: str | None = None,
    *,
    cache_dir: str | None = None,
    allow_pickle: bool = False,
    quiet: bool = False,
    repo_type: str = "model",
) -> ResolvedModel:
    """A local directory as is, or a hub repo downloaded (only the files a step needs) into the cache.

    `name` may carry its own `@revision`; an explicit `revision` argument wins.
    """
    local = Path(name).expanduser()
    if revision is None and local.is_dir():
        return ResolvedModel(local, None, None)
    ref = parse_hub_ref(name)
    if ref is None:
        raise LosslessError(
            f"model {name!r} is neither a local directory nor a hub id like `org/name`",
            hint="check the path (relative paths are taken from the recipe's directory)",
        )
    repo_type = ref.repo_type if repo_type == "model" else repo_type
    ref = ref._replace(repo_type=repo_type)
    allow, ignore = download_patterns(allow_pickle, repo_type)
    resolved = download_files(ref, revision, allow, ignore, cache_dir=cache_dir, quiet=quiet)
    if not allow_pickle and repo_type == "model":
        cache = str(cache_dir or default_cache_dir())
        assert resolved.repo_id is not None and resolved.commit is not None
        where = f"{resolved.repo_id}@{revision or ref.revision or 'main'}"
        _refuse_pickle_only(resolved.path, resolved.repo_id, resolved.commit, cache, where)
    return resolved


def resolve_metadata(
    name: str, revision: str | None = None, *, cache_dir: str | None = None
) -> ResolvedModel:
    """Only `config.json` / `adapter_config.json` (+ the weights index) of a model, never weights.

    For `lossless validate --resolve`: shapes and architectures can be checked in seconds.
    """
    local = Path(name).expanduser()
    if revision is None and local.is_dir():
        return ResolvedModel(local, None, None)
    ref = parse_hub_ref(name)
    if ref is None:
        raise LosslessError(f"model {name!r} is neither a local directory nor a hub id")
    files = ["config.json", "adapter_config.json", "*.safetensors.index.json"]
    return download_files(ref, revision, files, ["*/*"], cache_dir=cache_dir, quiet=True)


def download_files(
    ref: HubRef,
    revision: str | None,
    allow: list[str],
    ignore: list[str],
    *,
    cache_dir: str | None = None,
    quiet: bool = False,
) -> ResolvedModel:
    """snapshot_download of the files matching `allow` (minus `ignore`), errors made readable."""
    from huggingface_hub import snapshot_download

    repo_id, revision = ref.repo_id, revision or ref.revision or "main"
    cache = str(cache_dir or default_cache_dir())
    offline = is_offline()
    try:
        folder = snapshot_download(
            repo_id,
            repo_type=ref.repo_type,
            revision=revision,
            cache_dir=cache,
            allow_patterns=allow,
            ignore_patterns=ignore,
            local_files_only=offline,
            endpoint=hub_endpoint(),
            tqdm_class=_silent_tqdm() if quiet else None,
            max_workers=4,
        )
    except Exception as error:
        raise hub_error(
            error, repo_id, revision, cache=cache, offline=offline, endpoint=hub_endpoint()
        ) from error
    path = Path(folder)
    return ResolvedModel(path, repo_id, path.name if _COMMIT.match(path.name) else None)


def resolve_commit(name: str, revision: str | None = None, *, cache_dir: str | None = None) -> str:
    """The commit `org/name@revision` points to now, without downloading anything.

    Offline, the commit recorded in the cache (`refs/<revision>`) is used.
    """
    ref = parse_hub_ref(name)
    if ref is None:
        raise LosslessError(f"{name!r} is not a hub id like `org/name`")
    revision = revision or ref.revision or "main"
    if _COMMIT.match(revision):
        return revision
    cache = Path(cache_dir or default_cache_dir())
    if is_offline():
        folder = "--".join([f"{ref.repo_type}s", *ref.repo_id.split("/")])
        ref_file = cache / folder / "refs" / revision
        if ref_file.is_file():
            return ref_file.read_text().strip()
        raise hub_error(
            Offline(),
            ref.repo_id,
            revision,
            cache=str(cache),
            offline=True,
            endpoint=hub_endpoint(),
        )
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=hub_endpoint()).repo_info(
            ref.repo_id, revision=revision, repo_type=ref.repo_type
        )
    except Exception as error:
        raise hub_error(
            error, ref.repo_id, revision, cache=str(cache), offline=False, endpoint=hub_endpoint()
        ) from error
    assert info.sha is not None
    return info.sha


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


def _refuse_pickle_only(path: Path, repo_id: str, commit: str, cache: str, where: str) -> None:
    """A repo with only pickle weights downloads no weights at all: say why, instead of a later crash."""
    if any(path.glob("*.safetensors")) or (path / "adapter_config.json").exists():
        return
    from fnmatch import fnmatch

    from huggingface_hub import get_cached_repo_tree

    try:
        files = [f.path for f in get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache)]
    except Exception:
        return  # no listing cached (offline snapshot): nothing more we can say here
    pickles = [f for f in files if "/" not in f and any(fnmatch(f, p) for p in PICKLE_FILES)]
    if pickles:
        raise LosslessError(
            f"{where} has only pickle weights ({', '.join(sorted(pickles)[:3])}): "
            "loading them can run arbitrary code, so they were not downloaded",
            hint="pass --allow-pickle if you trust this repo (loaded with weights_only=True), or use "
            "a revision with safetensors weights",
        )


def _silent_tqdm() -> Any:
    from tqdm.auto import tqdm

    class Silent(tqdm):  # type: ignore[misc]  # tqdm's typing is loose
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
