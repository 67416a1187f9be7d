"""Walk the step DAG: skip what is fresh, run the rest, record what each output was made from.

This is the one place that knows about caching. Every step has a fingerprint (fingerprint.py);
its output directory is recorded in `<work dir>/.state/<step>.json` together with the fingerprint's
components *after* the step finished, so an interrupted step is never taken for a finished one.
Steps write into a partial directory that is renamed into place at the end (merges do this inside
`merge/output.py`, which also resumes an interrupted merge shard by shard).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.engine.fingerprint import Fingerprint, digest, path_identity
from lossless.engine.resolver import Resolver
from lossless.errors import LosslessError
from lossless.recipe.model import ApplyStep, EvalStep, MergeStep, ModelRef, Recipe, Step, TrainStep

STATE_DIR = ".state"


@dataclass(frozen=True)
class RunOptions:
    """Everything from the command line that changes what a run does."""

    work_dir: Path | None = None
    out: Path | None = None  # the final merge's output, from the command line
    force: frozenset[str] = frozenset()
    only: frozenset[str] = frozenset()
    seed: int | None = None
    shard_size: int = 5_000_000_000
    num_threads: int | None = None
    allow_crimes: bool = False
    copy_tokenizer: bool = True
    write_model_card: bool = True
    allow_pickle: bool = False
    trust_remote_code: bool = False
    quiet: bool = False
    cache_dir: str | None = None
    locked: bool = False  # refuse to run when an input resolves differently from RECIPE.lock
    write_lock: bool = True


@dataclass
class StepStatus:
    name: str
    kind: str
    state: str  # "fresh" | "stale" | "missing" | "lazy"
    output: Path | None
    reasons: list[str] = field(default_factory=list)
    fingerprint: Fingerprint | None = None


# ---- the shape of a recipe -------------------------------------------------------------------


def model_refs(step: Step) -> list[ModelRef]:
    """Every model reference a step reads (graph.step_refs), `model+lora` adapters included."""
    from lossless.recipe.graph import step_refs

    unique: dict[str, ModelRef] = {}
    for _, ref in step_refs(step):
        unique.setdefault(str(ref), ref)
        if ref.lora:
            unique.setdefault(ref.lora, ModelRef.parse(ref.lora))
    return list(unique.values())


def data_files(step: Step) -> list[str]:
    """Local data files a step reads (their content is part of its fingerprint)."""
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)
        elif isinstance(value, dict) and "path" in value:
            collect(value["path"])

    if isinstance(step, TrainStep):
        settings = step.settings
        collect(settings.get("data"))
        for key in ("replay", "ewc"):
            if isinstance(settings.get(key), dict):
                collect(settings[key].get("data"))
        if step.init:
            collect(step.init.get("config"))
            tokenizer = step.init.get("tokenizer")
            collect(tokenizer.get("train_on") if isinstance(tokenizer, dict) else tokenizer)
    elif isinstance(step, EvalStep):
        for value in step.data.values():
            collect(value)
    return found


def final_merge(recipe: Recipe) -> MergeStep | None:
    """The merge whose output is the recipe's result: the last one no other merge reads."""
    merges = recipe.merges
    read = {str(r) for m in merges for r in model_refs(m)}
    finals = [m for m in merges if m.name not in read]
    return finals[-1] if finals else (merges[-1] if merges else None)


# ---- the runner --------------------------------------------------------------------------------


class Runner:
    def __init__(self, recipe: Recipe, options: RunOptions) -> None:
        self.recipe = recipe
        self.options = options
        recipe_path = Path(recipe.path).resolve()
        self.recipe_dir = recipe_path.parent
        self.work_dir = (options.work_dir or self.recipe_dir / ".lossless").resolve()
        self.resolver = Resolver(
            recipe,
            cache_dir=options.cache_dir,
            allow_pickle=options.allow_pickle,
            quiet=options.quiet,
            materialise=self._materialise,
        )
        self._fingerprints: dict[str, Fingerprint] = {}
        self.lock_text: str | None = None  # RECIPE.lock's text, embedded in model cards
        from lossless.recipe.graph import topological_steps

        self.order: list[Step] = topological_steps(recipe)
        self._final = final_merge(recipe)

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
        from lossless.hub.repos import check_disk_space, parse_hub_ref, plan_downloads
        from lossless.recipe.graph import external_refs
        from lossless.recipe.references import local_path

        hub_refs = [
            str(r)
            for r in external_refs(self.recipe)
            if local_path(r.name, self.recipe_dir) is None and parse_hub_ref(r.name) is not None
        ]
        planned = plan_downloads(hub_refs, cache_dir=self.options.cache_dir) if hub_refs else []
        largest_input = max([p.bytes for p in planned] + [self._largest_local_input()], default=0)
        outputs = sum(
            largest_input for s in self.recipe.steps if isinstance(s, MergeStep | TrainStep)
        )
        check_disk_space(self.work_dir, sum(p.fetch_bytes for p in planned) + outputs)

    def _largest_local_input(self) -> int:
        sizes = [0]
        for step in self.recipe.steps:
            for ref in model_refs(step):
                if self.resolver.step_for(ref) is not None:
                    continue
                from lossless.recipe.references import local_path

                path = local_path(ref.name, self.recipe_dir)
                if path is not None and path.is_dir():
                    sizes.append(sum(f.stat().st_size for f in path.glob("*.safetensors")))
        return max(sizes)

    def _state_file(self, step: Step) -> Path:
        return self.work_dir / STATE_DIR / f"{step.name}.json"

    def _read_state(self, step: Step) -> dict[str, Any] | None:
        path = self._state_file(step)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _write_state(self, step: Step, fingerprint: Fingerprint, output: Path | None) -> None:
        path = self._state_file(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "step": step.name,
            "kind": step.kind,
            "fingerprint": fingerprint.value,
            "components": dict(fingerprint.components),
            "output": str(output) if output else None,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)

    # -- fingerprints

    def fingerprint(self, step: Step) -> Fingerprint:
        if step.name in self._fingerprints:
            return self._fingerprints[step.name]
        settings: Any = step
        if isinstance(step, EvalStep):
            # Gates only judge numbers; changing a threshold re-judges, it does not re-measure.
            settings = {
                "models": step.models,
                "data": step.data,
                "settings": step.settings,
                "reference": step.reference,
            }
        components: dict[str, str] = {"settings": digest(settings)}
        if isinstance(step, MergeStep):
            components["options"] = digest(
                {
                    "seed": self.options.seed,
                    "shard_size": self.options.shard_size,
                    "copy_tokenizer": self.options.copy_tokenizer,
                    "model_card": self.options.write_model_card,
                }
            )
        if isinstance(step, TrainStep):
            components["options"] = digest({"seed": self.options.seed})
        for ref in model_refs(step):
            dependency = self.resolver.step_for(ref)
            if dependency is not None:
                components[f"step:{ref}"] = self.fingerprint(dependency).value
            else:
                components[f"model:{ref}"] = self.resolver.identity(ref.name, ref.revision)
        for name in data_files(step):
            path = (self.recipe_dir / name) if not Path(name).is_absolute() else Path(name)
            if path.exists():
                components[f"data:{name}"] = path_identity(path)
            else:
                components[f"data:{name}"] = f"ref:{name}"  # a hub dataset id or a preset name
        fingerprint = Fingerprint(components)
        self._fingerprints[step.name] = fingerprint
        return fingerprint

    def status(self, step: Step) -> StepStatus:
        fingerprint = self.fingerprint(step)
        output = self.output_dir(step)
        if isinstance(step, ApplyStep) and not self._needs_files(step):
            return StepStatus(
                step.name, step.kind, "lazy", None, ["applied on the fly"], fingerprint
            )
        state = self._read_state(step)
        if state is None or not output.exists():
            return StepStatus(step.name, step.kind, "missing", output, ["never ran"], fingerprint)
        if state.get("output") != str(output):
            return StepStatus(step.name, step.kind, "stale", output, ["output moved"], fingerprint)
        if state.get("fingerprint") != fingerprint.value:
            reasons = fingerprint.changes_from(state.get("components", {}))
            return StepStatus(
                step.name, step.kind, "stale", output, reasons or ["changed"], fingerprint
            )
        return StepStatus(step.name, step.kind, "fresh", output, [], fingerprint)

    def _needs_files(self, step: ApplyStep) -> bool:
        """An apply step is written out only when asked, or when training/eval reads it."""
        if step.save:
            return True
        for other in self.recipe.steps:
            if isinstance(other, TrainStep | EvalStep) and any(
                r.name == step.name for r in model_refs(other)
            ):
                return True
        return False

    # -- running

    def selected(self) -> list[Step]:
        if not self.options.only:
            return self.order
        from lossless.recipe.graph import build_graph

        graph = build_graph(self.recipe)
        wanted: set[str] = set()
        for name in self.options.only:
            if name not in graph:
                raise LosslessError(
                    f"--only {name}: no step of that name",
                    hint=f"steps: {', '.join(s.name for s in self.order)}",
                )
            import networkx as nx

            wanted |= {name} | nx.ancestors(graph, name)
        return [s for s in self.order if s.name in wanted]

    def run(self) -> list[StepStatus]:
        unknown = self.options.force - {s.name for s in self.order}
        if unknown:
            raise LosslessError(f"--force {sorted(unknown)[0]}: no step of that name")
        from lossless.engine import lockfile as lock

        entries = lock.resolve_inputs(
            self.recipe.path, self.recipe.documents, cache_dir=self.options.cache_dir
        )
        if self.options.locked:
            lock.check_locked(self.recipe.path, entries)
            self.resolver.locked = entries
        self.lock_text = lock.lock_text(self.recipe.path, entries)
        self.check_disk_space()
        results = self._run_steps()
        if self.options.write_lock:
            lock.write_lock(self.recipe.path, entries)
        return results

    def _run_steps(self) -> list[StepStatus]:
        results = []
        for step in self.selected():
            status = self.status(step)
            forced = step.name in self.options.force
            if status.state == "fresh" and not forced:
                self.resolver.step_dirs[step.name] = status.output  # type: ignore[assignment]
                self._on_fresh(step, status)
                results.append(status)
                continue
            if status.state == "lazy":
                results.append(status)
                continue
            self._say(
                f"[bold]{step.kind}[/] {step.name}: running ({'; '.join(status.reasons) if not forced else 'forced'})"
            )
            output = self._run_step(step, status)
            self.resolver.step_dirs[step.name] = output
            results.append(
                StepStatus(step.name, step.kind, "ran", output, status.reasons, status.fingerprint)
            )
        return results

    def _say(self, text: str) -> None:
        if not self.options.quiet:
            from rich.console import Console

            Console(stderr=True).print(text)

    def _on_fresh(self, step: Step, status: StepStatus) -> None:
        self._say(f"[dim]{step.kind} {step.name}: fresh, skipped ({status.output})[/]")
        if isinstance(step, EvalStep) and status.output is not None:
            from lossless.steps.eval import check_saved_gates

            check_saved_gates(step, status.output)

    def _run_step(self, step: Step, status: StepStatus) -> Path:
        fingerprint = status.fingerprint or self.fingerprint(step)
        output = self.output_dir(step)
        self._check_not_input(step, output)
        if isinstance(step, MergeStep):
            from lossless.steps.merge import run_merge

            run_merge(step, self, output, fingerprint.value)
            self._write_state(step, fingerprint, output)
        elif isinstance(step, ApplyStep):
            self._materialise(step)
        elif isinstance(step, TrainStep):
            self._run_train(step, output, fingerprint)
        elif isinstance(step, EvalStep):
            self._run_eval(step, output, fingerprint)
        else:  # pragma: no cover - the recipe model has no other kinds
            raise LosslessError(f"step kind {step.kind!r} cannot run yet")
        return output

    def input_dirs(self, step: Step) -> list[Path]:
        """Every directory a step reads (external models and earlier steps' outputs)."""
        dirs = []
        for ref in model_refs(step):
            dependency = self.resolver.step_for(ref)
            if dependency is None:
                dirs.append(self.resolver.external_dir(ref.name, ref.revision).resolve())
            elif dependency.name in self.resolver.step_dirs:
                dirs.append(self.resolver.step_dirs[dependency.name].resolve())
        return dirs

    def _check_not_input(self, step: Step, output: Path) -> None:
        """Never write over a model or data file that a step reads."""
        for source in self.input_dirs(step):
            if output == source or output in source.parents or source in output.parents:
                raise LosslessError(
                    f"step `{step.name}` would write to {output}, which holds its input {source}",
                    hint="choose another output directory",
                )

    def _partial_dir(self, step: Step, fingerprint: Fingerprint) -> Path:
        """A stable scratch dir per fingerprint, kept on failure so training can resume."""
        partial = self.work_dir / f".partial-{step.name}-{fingerprint.value[:12]}"
        for stale in self.work_dir.glob(f".partial-{step.name}-*"):
            if stale != partial:
                shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def _finish(self, step: Step, partial: Path, output: Path, fingerprint: Fingerprint) -> None:
        if output.exists():
            shutil.rmtree(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(output)
        self._write_state(step, fingerprint, output)

    def _run_train(self, step: TrainStep, output: Path, fingerprint: Fingerprint) -> None:
        from lossless.steps.train import run_train

        base_dir = self.resolver.model_dir(step.base) if step.base else None
        partial = self._partial_dir(step, fingerprint)
        run_train(
            step,
            base_dir=base_dir,
            out_dir=partial,
            recipe_dir=self.recipe_dir,
            quiet=self.options.quiet,
            seed=self.options.seed,
        )
        # Checkpoints exist to resume an interrupted run; once the step has finished they are
        # optimizer state the size of several models, so they go before the output is published.
        shutil.rmtree(partial / "checkpoints", ignore_errors=True)
        self._finish(step, partial, output, fingerprint)

    def _run_eval(self, step: EvalStep, output: Path, fingerprint: Fingerprint) -> None:
        from lossless.errors import GateFailed
        from lossless.steps.eval import run_eval

        refs = [*step.models, *([step.reference] if step.reference else [])]
        model_dirs = {str(ref): self.resolver.model_dir(ref) for ref in refs}
        partial = self._partial_dir(step, fingerprint)
        try:
            run_eval(
                step,
                model_dirs=model_dirs,
                out_dir=partial,
                recipe_dir=self.recipe_dir,
                quiet=self.options.quiet,
            )
        except GateFailed as failed:
            # The numbers are good even when a gate is breached: keep them, then fail, pointing
            # at where they now live.
            self._finish(step, partial, output, fingerprint)
            raise GateFailed(
                failed.message, hint=f"every number is in {output / 'eval.json'}"
            ) from None
        self._finish(step, partial, output, fingerprint)

    def _materialise(self, step: ApplyStep) -> Path:
        """Write an apply step's adapted model to disk (for training or evaluation on it)."""
        fingerprint = self.fingerprint(step)
        output = self.output_dir(step)
        state = self._read_state(step)
        if output.exists() and state and state.get("fingerprint") == fingerprint.value:
            return output
        from lossless.steps.apply import materialise

        materialise(step, self, output, fingerprint.value)
        self._write_state(step, fingerprint, output)
        return output


def statuses(recipe: Recipe, options: RunOptions) -> list[StepStatus]:
    """Every step's freshness, for `lossless plan` (touches no weights, downloads nothing new)."""
    runner = Runner(recipe, options)
    return [runner.status(step) for step in runner.order]
