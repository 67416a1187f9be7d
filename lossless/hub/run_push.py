"""`push_to_hub:` at the end of `lossless run`: each output goes up as `lossless push` sends it.

    train:
      new_skill:
        ...
        push_to_hub: my-org/new-skill-lora                 # the adapter
    push_to_hub: {repo: my-org/qwen2-merged, private: true}  # this document's merge stage

When every selected step has finished and every gate passed, each step with a target is
planned by `hub/push.plan_recipe_push` (the output, its card with the eval results, the recipe
and its lock) and uploaded by `hub/push.upload`: the code path of `lossless push`. It runs inside
the run's locks, so no other run replaces an output while it uploads. A failed gate pushes
nothing, and says so in the error, unless `--force-push`; `--no-push` skips every push. The
targets live in `Recipe.pushes`, outside the steps, so no fingerprint sees them: pushing
somewhere else never reruns a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lossless.errors import GateFailed


@dataclass(frozen=True)
class Pushed:
    step: str
    repo: str
    url: str


def targets(runner: Any) -> list[tuple[str, Any]]:
    """(step name, PushTarget) of the steps this run selected, in run order."""
    pushes = runner.recipe.pushes
    return [(s.name, pushes[s.name]) for s in runner.selected() if s.name in pushes]


def push_outputs(runner: Any, *, force: bool = False) -> list[Pushed]:
    """Upload every selected `push_to_hub:` output; a refusal (a gate of it failed, or an eval
    of it has not run) raises before anything of that step is sent."""
    from lossless.hub.push import describe, plan_recipe_push, upload

    done = []
    for name, target in targets(runner):
        plan = plan_recipe_push(
            runner.recipe, target.repo, step_name=name, force=force, runner=runner
        )
        for line in describe(plan):
            runner.note(line)
        url = upload(plan, private=target.private, revision=target.revision)
        runner.note(f"pushed {name}: {url}")
        done.append(Pushed(name, target.repo, url))
    return done


def after_failed_gate(runner: Any, failed: GateFailed) -> GateFailed:
    """The error the run ends with: with --force-push the outputs are pushed anyway and the
    error says so; without, it names every push that did not happen."""
    pending = targets(runner)
    if not pending:
        return failed
    repos = ", ".join(f"{t.repo} ({name})" for name, t in pending)
    if runner.options.force_push:
        runner.pushed = push_outputs(runner, force=True)
        return GateFailed(f"{failed.message}\npushed anyway (--force-push): {repos}", failed.hint)
    return GateFailed(
        f"{failed.message}\nnot pushed: {repos}",
        hint=(failed.hint + "; " if failed.hint else "")
        + "lossless run --force-push pushes past a failed gate",
    )
