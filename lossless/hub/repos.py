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
