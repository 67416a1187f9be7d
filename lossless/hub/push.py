"""Publish a result to a hub repo: the model or adapter, its card, the recipe and its lock.

    lossless push recipe.yaml org/name            the final merge (or --step NAME) of a finished run
    lossless push ./out/merged org/name           a directory as it is (its card kept or written)

From a recipe, the step must be fresh (finished, nothing changed since), and every eval step that
measured it must have passed its gates: a pushed model is one the recipe vouches for. `force`
pushes anyway (a failed gate is then named in the commit message). The card is rebuilt for the
repo (hub/cards.py): its `model-index` holds the eval results found in the work dir, because the
evals run after the merge that wrote the first card.

What goes up: every file of the output except the run's bookkeeping (the manifest, resumable
checkpoints), `README.md`, `lossless.yaml` (the recipe) and `lossless.lock` (its resolved
inputs, when RECIPE.lock exists), and `eval/<step>/eval.json` + `eval.png` of the evals of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.hub.cards import Score, eval_scores
from lossless.recipe.model import EvalStep, GenerateStep, Recipe, Step

CARD, RECIPE_FILE, LOCK_FILE = "README.md", "lossless.yaml", "lossless.lock"
SKIPPED = ("lossless-manifest.json", "lossless-journal.jsonl")
SKIPPED_DIRS = ("checkpoints",)


@dataclass(frozen=True)
class PushPlan:
    """What one push uploads: `files` maps the path in the repo → local file or bytes."""

    repo_id: str
    step: str | None
    source: Path
    files: dict[str, Path | bytes] = field(default_factory=dict)
    failed_gates: tuple[str, ...] = ()  # "eval X: message" for each breached gate (when forced)
    notes: tuple[str, ...] = ()


def pushable(step: Step) -> bool:
    """Steps whose output is a model or an adapter (an eval or generate step makes data)."""
    return not isinstance(step, EvalStep | GenerateStep)


def plan_recipe_push(
    recipe: Recipe,
    repo_id: str,
    *,
    step_name: str | None = None,
    work_dir: Path | None = None,
    out: Path | None = None,
    force: bool = False,
    cache_dir: str | None = None,
    runner: Any = None,
) -> PushPlan:
    """The upload for a recipe's finished step (default: its final merge, else its last model).

    `runner`: the run that just finished (`push_to_hub:`), whose options (seed, shard size) the
    step's freshness depends on, and whose RECIPE.lock text is the one to push."""
    from lossless.engine.context import RunOptions
    from lossless.engine.runner import Runner, final_merge
    from lossless.hub.cards import lineage, render_card

    if runner is None:
        options = RunOptions(work_dir=work_dir, out=out, cache_dir=cache_dir, quiet=True)
        runner = Runner(recipe, options)
    step = _pick_step(recipe, step_name, final_merge(recipe))
    status = runner.status(step)
    if status.state != "fresh" or status.output is None:
        why = "; ".join(status.reasons) or status.state
        raise LosslessError(
            f"{step.kind} {step.name} has no finished output to push ({why})",
            hint=f"run it first: lossless run {recipe.path}",
        )
    evals, failed, notes = _evals_of(recipe, runner, step.name)
    if failed and not force:
        lines = "\n".join(f"  - {f}" for f in failed)
        raise LosslessError(
            f"refusing to push {step.name}: its gates failed\n{lines}",
            hint="fix the recipe and rerun, or pass --force to push it anyway",
        )
    scores: list[Score] = []
    for payload, _ in evals:
        scores += eval_scores(payload, step.name)
    recipe_text = Path(recipe.path).read_text() if recipe.text is None else recipe.text
    from lossless.engine.lockfile import lock_path

    lock = lock_path(recipe.path)
    lock_text = runner.lock_text or (lock.read_text() if lock.is_file() else None)
    card = render_card(
        recipe_text,
        name=repo_id.split("/")[-1],
        lineage=lineage(recipe, step.name),
        lock_text=lock_text,
        scores=scores,
        repo_id=repo_id,
    )
    files = _output_files(status.output)
    files[CARD] = card.encode()
    files[RECIPE_FILE] = recipe_text.encode()
    if lock_text is not None:
        files[LOCK_FILE] = lock_text.encode()
    for payload, eval_dir in evals:
        for name in ("eval.json", "eval.png"):
            if (eval_dir / name).is_file():
                files[f"eval/{payload.get('step')}/{name}"] = eval_dir / name
    return PushPlan(repo_id, step.name, status.output, files, tuple(failed), tuple(notes))


def plan_dir_push(directory: Path, repo_id: str) -> PushPlan:
    """A model or adapter directory as it is; a card is written only when it has none."""
    if not directory.is_dir():
        raise LosslessError(f"{directory} is not a directory", hint="push a recipe or a model dir")
    if not any((directory / n).is_file() for n in ("config.json", "adapter_config.json")):
        raise LosslessError(
            f"{directory} holds no model (no config.json or adapter_config.json)",
            hint="push a model or adapter directory, or the recipe that made it",
        )
    files = _output_files(directory)
    notes = ["gates are not checked for a directory: push the recipe to check them"]
    if CARD not in files:
        files[CARD] = _plain_card(directory, repo_id).encode()
    return PushPlan(repo_id, None, directory, files, (), tuple(notes))


def upload(plan: PushPlan, *, private: bool = False, revision: str | None = None) -> str:
    """Create the repo if needed and push the plan's files as one commit → the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from lossless.hub.repos import hub_endpoint

    api = HfApi(endpoint=hub_endpoint())
    message = f"lossless push of {plan.step or plan.source.name}"
    if plan.failed_gates:
        message += f" (forced: {len(plan.failed_gates)} gate(s) failed)"
    operations = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=_payload(data))
        for path, data in sorted(plan.files.items())
    ]
    try:
        api.create_repo(plan.repo_id, private=private, exist_ok=True)
        info = api.create_commit(
            plan.repo_id,
            operations,
            commit_message=message,
            commit_description="\n".join(plan.failed_gates),
            revision=revision,
        )
    except HfHubHTTPError as exc:
        raise _write_error(exc, plan.repo_id) from None
    except Exception as exc:  # connection refused, DNS, TLS: the http client's transport errors
        if not isinstance(exc, OSError) and not type(exc).__module__.startswith("httpx"):
            raise
        raise LosslessError(
            f"cannot reach the hub to push {plan.repo_id}: {exc}",
            hint="check the network (and HF_ENDPOINT); nothing was pushed",
        ) from None
    return str(info.commit_url)


def _write_error(exc: Any, repo_id: str) -> LosslessError:
    from lossless.hub.failures import LOGIN_FIX

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return LosslessError(
            f"no write access to {repo_id} (HTTP {status})",
            hint=f"{LOGIN_FIX}, with a token that may write to {repo_id.split('/')[0]}",
        )
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LosslessError(f"pushing to {repo_id} failed: {first}", hint="nothing was pushed")


def _payload(data: Path | bytes) -> Any:
    return str(data) if isinstance(data, Path) else data


def _pick_step(recipe: Recipe, name: str | None, final: Step | None) -> Step:
    models = [s for s in recipe.steps if pushable(s)]
    if name is not None:
        if name not in recipe.step_names:
            from lossless.recipe.references import did_you_mean

            raise LosslessError(
                f"--step {name}: no step of that name",
                hint=did_you_mean(name, recipe.step_names)
                or f"steps: {', '.join(s.name for s in models)}",
            )
        step = recipe.step(name)
        if not pushable(step):
            raise LosslessError(
                f"--step {name}: a {step.kind} step makes no model to push",
                hint=f"push one of: {', '.join(s.name for s in models)}",
            )
        return step
    if final is not None:
        return final
    if not models:
        raise LosslessError(f"{recipe.path} makes no model to push")
    return models[-1]


def _evals_of(
    recipe: Recipe, runner: Any, step_name: str
) -> tuple[list[tuple[dict[str, Any], Path]], list[str], list[str]]:
    """(eval.json payload, its dir) of every finished eval that measured `step_name`, every
    breached gate among them, and notes on evals of it that have not run."""
    evals: list[tuple[dict[str, Any], Path]] = []
    failed: list[str] = []
    notes: list[str] = []
    for step in recipe.steps:
        if not isinstance(step, EvalStep) or step_name not in {str(m) for m in step.models}:
            continue
        status = runner.status(step)
        path = status.output / "eval.json" if status.output else None
        if status.state != "fresh" or path is None or not path.is_file():
            failed.append(f"eval {step.name}: not run (its gates are unknown)")
            continue
        payload = json.loads(path.read_text())
        evals.append((payload, path.parent))
        gates = payload.get("gates", {})
        breaches = [b for b in gates.get("breaches", []) if b.get("model") == step_name] or (
            [] if gates.get("passed", True) else [{"message": "gates failed"}]
        )
        failed += [f"eval {step.name}: {b.get('message')}" for b in breaches]
    return evals, failed, notes


def _output_files(directory: Path) -> dict[str, Path | bytes]:
    files: dict[str, Path | bytes] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if not path.is_file() or rel.parts[0] in SKIPPED_DIRS or rel.name in SKIPPED:
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue  # partial dirs, caches
        files[rel.as_posix()] = path
    return files


def _plain_card(directory: Path, repo_id: str) -> str:
    """A card for a directory lossless did not write: its base from adapter_config/config."""
    from lossless.hub.cards import Lineage, render_card
    from lossless.recipe.references import looks_like_hub_id

    base = None
    adapter = directory / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
    hub = (base,) if isinstance(base, str) and looks_like_hub_id(base) else ()
    recipe = directory / RECIPE_FILE
    text = recipe.read_text() if recipe.is_file() else "# no recipe: pushed as a directory\n"
    relation = "adapter" if adapter.is_file() else None
    lineage = Lineage(hub_models=hub, relation=relation, adapter_base=base)
    return render_card(text, name=repo_id.split("/")[-1], lineage=lineage, repo_id=repo_id)


def describe(plan: PushPlan) -> Sequence[str]:
    """Lines for the terminal: what goes where."""
    total = sum(len(d) if isinstance(d, bytes) else d.stat().st_size for d in plan.files.values())
    return [
        f"push {plan.step or plan.source} → {plan.repo_id}: {len(plan.files)} files, "
        f"{total / 1e6:.1f} MB",
        *[f"note: {n}" for n in plan.notes],
        *[f"forced past: {f}" for f in plan.failed_gates],
    ]
