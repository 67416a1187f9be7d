"""Walk the step DAG: skip what is fresh, run the rest through one table of step handlers.

The runner owns the order (`recipe/graph.py`), `--only` / `--force`, the lock, the disk check,
where each output goes and when `push_to_hub:` outputs are uploaded (`hub/run_push.py`); freshness is `freshness.py`, state records `state.py`, and every
output is written into a partial dir and published by `publish.py`. Steps are
`steps.HANDLERS[step.kind].run(step, ctx)` and never see the runner.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from lossless.engine.context import (
    KnownHashes,
    RunOptions,
    StepContext,
    default_work_dir,
    is_shared_legacy,
)
from lossless.engine.fingerprint import Fingerprint
from lossless.engine.freshness import Freshness, StepStatus, manifest_digest
from lossless.engine.io_errors import check_text_files, disk_full
from lossless.engine.publish import open_partial, publish
from lossless.engine.resolver import Resolver
from lossless.engine.state import StateStore
from lossless.engine.verify import output_differences
from lossless.errors import GateFailed, LosslessError
from lossless.recipe.model import ApplyStep, MergeStep, Recipe, Step, TrainStep
from lossless.validation.outputs import OutputRule

__all__ = ["RunOptions", "Runner", "StepStatus", "final_merge", "statuses"]


def final_merge(recipe: Recipe) -> MergeStep | None:
    """The merge whose output is the recipe's result: the last one no other merge reads."""
    merges = recipe.merges
    read = {str(r) for m in merges for r in recipe.model_refs(m.name)}
    finals = [m for m in merges if m.name not in read]
    return finals[-1] if finals else (merges[-1] if merges else None)


class Runner:
    def __init__(self, recipe: Recipe, options: RunOptions) -> None:
        from lossless.recipe.graph import topological_steps

        self.recipe = recipe
        self.options = options
        self.recipe_dir = Path(recipe.path).resolve().parent
        self.work_dir = (options.work_dir or default_work_dir(recipe.path)).resolve()
        self.resolver = Resolver(
            recipe,
            cache_dir=options.cache_dir,
            allow_pickle=options.allow_pickle,
            allow_non_finite=options.allow_non_finite,
            quiet=options.quiet,
            materialise=self._materialise,
        )
        self.state = StateStore(self.work_dir)
        self.freshness = Freshness(recipe, options, self.resolver, self.state, self.output_dir)
        self.lock_text: str | None = None  # RECIPE.lock's text, embedded in model cards
        self.order: list[Step] = topological_steps(recipe)
        self._final = final_merge(recipe)
        self._step_bytes: int | None = None
        self.pushed: list[Any] = []  # hub/run_push.Pushed of each `push_to_hub:` upload

    def output_rule(self, input_dirs: list[Path] | None = None) -> OutputRule:
        """Where this run may publish (`validation/outputs.py`, the same rule as `validate`)."""
        return OutputRule(
            Path(self.recipe.path), self.work_dir, input_dirs or [], self.options.overwrite
        )

    # -- where things go

    def output_dir(self, step: Step) -> Path:
        if self._final is not None and step.name == self._final.name:
            if self.options.out is not None:
                return Path(self.options.out).resolve()
            if self.recipe.output:
                # A recipe from elsewhere may only write beside itself or in the work dir.
                from lossless.validation.safety import check_output_path

                return check_output_path(
                    self.recipe.output,
                    [self.recipe_dir, self.work_dir],
                    from_cli=False,
                    base=self.recipe_dir,
                    what=f"`output:` of {Path(self.recipe.path).name}",
                ).resolve()
        return self.work_dir / step.name

    def check_disk_space(self) -> None:
        """Before anything starts: room for the downloads plus (roughly) every step's output."""
        from lossless.hub.downloads import check_disk_space, plan_downloads
        from lossless.hub.repos import parse_hub_ref
        from lossless.recipe.graph import external_refs
        from lossless.recipe.references import local_path

        hub_refs, local_sizes = [], [0]
        for ref in external_refs(self.recipe):
            path = local_path(ref.name, self.recipe_dir)
            if path is not None and path.is_dir():
                local_sizes.append(sum(f.stat().st_size for f in path.glob("*.safetensors")))
            elif path is None and parse_hub_ref(ref.name) is not None:
                hub_refs.append(str(ref))
        planned = plan_downloads(hub_refs, cache_dir=self.options.cache_dir) if hub_refs else []
        largest_input = max([p.bytes for p in planned] + local_sizes)
        outputs = sum(
            largest_input for s in self.recipe.steps if isinstance(s, MergeStep | TrainStep)
        )
        self._step_bytes = largest_input  # what one step's output needs, for a disk-full message
        check_disk_space(self.work_dir, sum(p.fetch_bytes for p in planned) + outputs)

    # -- what runs

    def fingerprint(self, step: Step) -> Fingerprint:
        return self.freshness.fingerprint(step)

    def status(self, step: Step) -> StepStatus:
        return self.freshness.status(step)

    def selected(self) -> list[Step]:
        if not self.options.only:
            return self.order
        import networkx as nx

        from lossless.recipe.graph import build_graph

        graph = build_graph(self.recipe)
        wanted: set[str] = set()
        for name in self.options.only:
            if name not in graph:
                raise LosslessError(
                    f"--only {name}: no step of that name",
                    hint=f"steps: {', '.join(s.name for s in self.order)}",
                )
            wanted |= {name} | nx.ancestors(graph, name)
        return [s for s in self.order if s.name in wanted]

    def run(self) -> list[StepStatus]:
        unknown = self.options.force - {s.name for s in self.order}
        if unknown:
            raise LosslessError(f"--force {sorted(unknown)[0]}: no step of that name")
        from lossless.engine.runlock import lock_path_for, run_locks

        if self.options.work_dir is None and is_shared_legacy(self.work_dir):
            self.note(
                f"{self.work_dir} holds the steps of every recipe in this folder (made by an older "
                "lossless); it is used as it is. Move it to "
                f"{self.work_dir / Path(self.recipe.path).stem} to give this recipe its own."
            )

        locks = [lock_path_for(self.work_dir, work_dir=True)]
        if self._final is not None:
            final = self.output_dir(self._final)
            if not final.is_relative_to(self.work_dir):
                locks.append(lock_path_for(final, work_dir=False))
        with run_locks(locks, wait=self.options.wait, say=self.note):
            try:
                results = self._run_locked()
            except GateFailed as failed:
                if not self.options.push:
                    raise
                from lossless.hub.run_push import after_failed_gate

                raise after_failed_gate(self, failed) from None
            if self.options.push and self.recipe.pushes:
                from lossless.hub.run_push import push_outputs

                self.pushed = push_outputs(self)  # `push_to_hub:` outputs, in the locks
            return results

    def _run_locked(self) -> list[StepStatus]:
        from lossless.engine import lockfile

        selected = {s.name for s in self.selected()} if self.options.only else None
        entries, unresolved = lockfile.resolve_for_run(
            self.recipe, cache_dir=self.options.cache_dir, steps=selected
        )
        if self.options.locked:
            lockfile.check_locked(self.recipe.path, entries, unresolved=unresolved)
            self.resolver.locked = entries
        self.lock_text = lockfile.lock_text(self.recipe.path, entries)
        for step in self.selected():  # refuse before hours of training, not after
            if not isinstance(step, ApplyStep) or self.freshness.needs_files(step):
                self.output_rule().check(self.output_dir(step))
            self._preflight(step)
        self.check_disk_space()
        results = [self._run_or_skip(step) for step in self.selected()]
        if self.options.write_lock and unresolved:
            self.note(
                f"{lockfile.lock_path(self.recipe.path).name} not updated: "
                + "; ".join(
                    f"{ref} could not be resolved ({why})" for ref, why in unresolved.items()
                )
                + " (no step of this run reads it)"
            )
        elif self.options.write_lock:
            lockfile.write_lock(self.recipe.path, entries)
        return results

    def _preflight(self, step: Step) -> None:
        """The step kind's own checks, for a step that will run (e.g. a launcher it needs)."""
        from lossless.steps import HANDLERS

        check = HANDLERS[step.kind].preflight
        if check is not None and (
            step.name in self.options.force or self.status(step).state != "fresh"
        ):
            check(step, self.options)

    def _run_or_skip(self, step: Step) -> StepStatus:
        from lossless.steps import HANDLERS

        status = self.status(step)
        forced = step.name in self.options.force
        if status.state == "lazy":
            return status
        if status.state == "fresh" and not forced:
            assert status.output is not None
            self.resolver.step_dirs[step.name] = status.output
            self._say(f"[dim]{step.kind} {step.name}: fresh, skipped ({status.output})[/]")
            on_fresh = HANDLERS[step.kind].on_fresh
            if on_fresh is not None:
                on_fresh(step, status.output)
            return status
        why = "forced" if forced else "; ".join(status.reasons)
        self._say(f"[bold]{step.kind}[/] {step.name}: running ({why})")
        output = self._execute(step)
        return StepStatus(step.name, step.kind, "ran", output, status.reasons, status.fingerprint)

    def _execute(self, step: Step) -> Path:
        """Run one step into its partial dir, publish it, record its state."""
        from lossless.steps import HANDLERS

        fingerprint = self.fingerprint(step)
        target = self.output_dir(step)
        self.output_rule(self.resolver.input_dirs(step.name)).check(target)
        ctx = StepContext(
            recipe=self.recipe,
            options=self.options,
            resolver=self.resolver,
            out_dir=open_partial(target, fingerprint.value),
            target=target,
            fingerprint=fingerprint.value,
            lock_text=self.lock_text,
            fingerprint_parts=fingerprint.components,
            work_dir=self.work_dir,
        )
        check_text_files(self._data_files(step))
        try:
            known = HANDLERS[step.kind].run(step, ctx)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise disk_full(ctx.out_dir, self._step_bytes, step.name) from error
        except GateFailed:
            # The numbers are good even when a gate is breached: keep them, then fail.
            self._publish(step, ctx, None)
            raise
        self._publish(step, ctx, known)
        return target

    def _publish(self, step: Step, ctx: StepContext, known: KnownHashes | None) -> None:
        kept = publish(ctx.out_dir, ctx.target, ctx.fingerprint, known, Path(self.recipe.path))
        if kept is not None:
            self._say(f"note: what was in {ctx.target} before (--overwrite) is now in {kept}")
        self.state.write(
            step.name,
            step.kind,
            self.fingerprint(step),
            ctx.target,
            made=manifest_digest(ctx.target),
            inputs_made=self.freshness.inputs_made(step),
        )
        self.resolver.step_dirs[step.name] = ctx.target

    def _data_files(self, step: Step) -> list[Path]:
        from lossless.recipe.references import local_path

        found = (
            local_path(i.value, self.recipe_dir) for i in self.recipe.inputs_of(step.name, "data")
        )
        return [p for p in found if p is not None]

    def _materialise(self, step: ApplyStep) -> Path:
        """Write an apply step's adapted model to disk (for training or evaluation on it)."""
        record = self.state.read(step.name)
        target = self.output_dir(step)
        same = record and record.get("fingerprint") == self.fingerprint(step).value
        if same and target.exists() and not output_differences(target, full=self.options.verify):
            return target
        return self._execute(step)

    def note(self, text: str) -> None:
        """A dim line on stderr (nothing with -q)."""
        from rich.markup import escape

        self._say(f"[dim]{escape(text)}[/]")

    def _say(self, text: str) -> None:
        if not self.options.quiet:
            from rich.console import Console

            Console(stderr=True, soft_wrap=True).print(text)  # paths stay whole for copying


def statuses(recipe: Recipe, options: RunOptions) -> list[StepStatus]:
    """Every step's freshness, for `lossless plan` (touches no weights, downloads nothing new)."""
    runner = Runner(recipe, options)
    return [runner.status(step) for step in runner.order]
