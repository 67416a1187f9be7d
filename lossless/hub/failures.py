"""huggingface_hub's exceptions turned into messages that name the repo and say how to fix it.

The client raises GatedRepoError (401: not logged in; 403: logged in, not granted),
RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError (offline or unreachable,
and not cached) and plain httpx errors for dropped connections. Each becomes a LosslessError.
"""

from __future__ import annotations

from lossless.errors import LosslessError

LOGIN_FIX = "run `hf auth login` (or `huggingface-cli login`), or set HF_TOKEN"


class Offline(Exception):
    """Raised by lossless.hub.repos when HF_HUB_OFFLINE is set and the cache lacks what is asked."""


def hub_error(
    error: Exception, repo_id: str, revision: str, *, cache: str, offline: bool, endpoint: str
) -> LosslessError:
    """Turn a huggingface_hub / network exception into a message that names the repo and the fix."""
    from huggingface_hub import errors

    where = f"{repo_id}@{revision}"
    page = f"{endpoint}/{repo_id}"
    if isinstance(error, errors.GatedRepoError):
        status = error.response.status_code if error.response is not None else 401
        if status == 403:
            return LosslessError(
                f"{repo_id} is a gated repo and your token has not been granted access",
                hint=f"accept the conditions on {page} with the account of your token, then retry",
            )
        return LosslessError(
            f"{repo_id} is a gated repo: downloading it needs a logged-in account that accepted its "
            "conditions",
            hint=f"accept the conditions on {page}, then {LOGIN_FIX}",
        )
    if isinstance(error, errors.RevisionNotFoundError):
        return LosslessError(
            f"revision {revision!r} not found in {repo_id}",
            hint=f"use a branch, tag or commit that exists (see {page}/tree/main)",
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return LosslessError(
            f"repo {repo_id} not found on {endpoint}",
            hint=f"check the spelling; if it is private, {LOGIN_FIX}",
        )
    if isinstance(error, errors.HFValidationError):
        return LosslessError(f"{repo_id!r} is not a valid hub id: {error}")
    if offline or isinstance(error, Offline | errors.OfflineModeIsEnabled):
        return LosslessError(
            f"HF_HUB_OFFLINE is set and {where} is not (completely) in the cache at {cache}",
            hint="run once with network access (unset HF_HUB_OFFLINE) to download it, "
            "or point --transformers-cache / HF_HOME at a cache that has it",
        )
    network = {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError"}
    if isinstance(error, errors.LocalEntryNotFoundError) or network & {
        c.__name__ for c in type(error).__mro__
    }:
        return LosslessError(
            f"cannot reach {endpoint} to download {where}, and it is not in the cache at {cache}",
            hint="check your network connection (or set HF_HUB_OFFLINE=1 to use only the cache)",
        )
    return LosslessError(
        f"download of {where} failed: {type(error).__name__}: {error}",
        hint="partial files are discarded by the hub client; run the command again to retry",
    )
