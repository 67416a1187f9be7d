"""Optional lm-evaluation-harness backend: `tasks: [hellaswag, arc_easy]` in an eval step.

lm_eval is a large optional dependency, so it is imported only when a recipe names tasks, and its
absence is a clear error that says how to install it rather than an ImportError traceback.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError


def require_lm_eval() -> Any:
    """The `lm_eval` module, or a LosslessError telling the user to `pip install lm-eval`."""
    try:
        import lm_eval
    except ImportError as exc:
        raise LosslessError(
            "eval `tasks:` needs lm-evaluation-harness, which is not installed",
            hint="pip install lm-eval   (or remove `tasks:` from the eval step)",
        ) from exc
    return lm_eval


def run_tasks(
    model_dir: Path,
    tasks: Sequence[str],
    *,
    batch_size: int = 8,
    limit: int | None = None,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """Run lm_eval `tasks` on the local HF model dir → task → {"acc,none": 0.61, ...}.

    Only numeric results are kept (lm_eval also reports strings such as `alias`).
    """
    lm_eval = require_lm_eval()
    model_args = f"pretrained={model_dir}"
    kwargs: dict[str, Any] = {
        "model": "hf",
        "model_args": model_args,
        "tasks": list(tasks),
        "batch_size": batch_size,
        "limit": limit,
        "random_seed": seed,
        "numpy_random_seed": seed,
        "torch_random_seed": seed,
    }
    if device:
        kwargs["device"] = device
    # Older lm_eval releases lack the seed arguments: pass only what this version accepts.
    accepted = inspect.signature(lm_eval.simple_evaluate).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    try:
        output = lm_eval.simple_evaluate(**kwargs)
    except Exception as exc:  # lm_eval raises plain exceptions for unknown tasks and the like
        raise LosslessError(
            f"lm_eval failed on {model_dir} for tasks {', '.join(tasks)}: {exc}",
            hint="check the task names with `lm_eval --tasks list`",
        ) from exc
    results = (output or {}).get("results", {})
    return {
        task: {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        for task, values in results.items()
    }
