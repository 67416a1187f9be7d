"""Is a step fresh? Its fingerprint now, against the one recorded when its output was made.

A step's fingerprint (`fingerprint.py`) has named components: its settings, the fingerprints of
the steps it reads, the identity of every external model and data file it reads (from
`recipe.inputs`, the one walk over a recipe's inputs). `status` compares them with the step's
state record and says why a step must run ("model:org/x: changed", "never ran"); a step whose
fingerprint matches is fresh only if its output is intact (`verify.py`) and every step it read
is still the output it read (`made`, see `state.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lossless.engine.context import RunOptions
from lossless.engine.fingerprint import Fingerprint, digest, path_identity
from lossless.engine.publish import read_manifest
from lossless.engine.resolver import Resolver
from lossless.engine.state import StateStore
from lossless.engine.verify import output_differences
from lossless.errors import LosslessError
from lossless.recipe.inputs import Input
from lossless.recipe.model import (
    ApplyStep,
    EvalStep,
    GenerateStep,
    MergeStep,
    Recipe,
    Step,
    TrainStep,
)
from lossless.recipe.references import data_kind, local_path


def train_provenance(step: TrainStep) -> dict[str, object]:
    """What a train step's `settings` component digests: the block as written, laid out as the
    TrainStep of fingerprint version 1 was (name, base, method, init, settings), so typed
    settings with explicit defaults left every recorded fingerprint valid. A default changed in
    code therefore does not rerun a step; bump FINGERPRINT_VERSION when it must."""
    provenance: dict[str, object] = {
        "name": step.name,
        "base": step.base,
        "method": step.block.get("method", "lora"),
        "init": step.block.get("init"),
        "settings": step.block,
    }
    if step.block.get("packing") and step.block.get("format") != "text":
        # `packing: true` packed text data only until the move to trl; it now packs chat,
        # instruction and completion data too, so such a step's training changed meaning.
        provenance["packing"] = "every format"
    return provenance


@dataclass
class StepStatus:
    name: str
    kind: str
    state: str  # "fresh" | "stale" | "missing" | "lazy" | "ran"
    output: Path | None
    reasons: list[str] = field(default_factory=list)
    fingerprint: Fingerprint | None = None


class Freshness:
    def __init__(
        self,
        recipe: Recipe,
        options: RunOptions,
        resolver: Resolver,
        state: StateStore,
        output_dir: Callable[[Step], Path],
    ) -> None:
        self.recipe, self.options, self.resolver = recipe, options, resolver
        self.state, self.output_dir = state, output_dir
        self._fingerprints: dict[str, Fingerprint] = {}

    def fingerprint(self, step: Step) -> Fingerprint:
        if step.name in self._fingerprints:
            return self._fingerprints[step.name]
        settings: object = step
        if isinstance(step, EvalStep):
            # Gates only judge numbers; changing a threshold re-judges, it does not re-measure.
            settings = {
                "models": step.models,
                "data": step.data,
                "settings": step.settings,
                "reference": step.reference,
            }
        if isinstance(step, TrainStep):
            settings = train_provenance(step)
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
        if isinstance(step, TrainStep | GenerateStep):
            components["options"] = digest({"seed": self.options.seed})
        for ref in self.recipe.model_refs(step.name):
            dependency = self.resolver.step_for(ref)
            if dependency is not None:
                components[f"step:{ref}"] = self.fingerprint(dependency).value
            else:
                components[f"model:{ref}"] = self.resolver.identity(ref.name, ref.revision)
        for item in self.recipe.inputs_of(step.name, "data"):
            if item.value in self.recipe.step_names:  # a generate step's rows
                dependency = self.recipe.step(item.value)
                components[f"step:{item.value}"] = self.fingerprint(dependency).value
                continue
            components.setdefault(f"data:{item.value}", self._data_identity(item))
        fingerprint = Fingerprint(components)
        self._fingerprints[step.name] = fingerprint
        return fingerprint

    def dependencies(self, step: Step) -> list[Step]:
        """The steps whose outputs `step` reads: models by reference, rows of generate steps."""
        found = [self.resolver.step_for(ref) for ref in self.recipe.model_refs(step.name)]
        found += [
            self.recipe.step(item.value)
            for item in self.recipe.inputs_of(step.name, "data")
            if item.value in self.recipe.step_names
        ]
        unique = {d.name: d for d in found if d is not None}
        return list(unique.values())

    def made(self, step: Step) -> str | None:
        """What `step`'s output is now: its recorded manifest digest; for a lazy apply step (no
        files of its own), a digest of what its inputs are."""
        if isinstance(step, ApplyStep) and not self.needs_files(step):
            return digest(self.inputs_made(step))
        record = self.state.read(step.name)
        return record.get("made") if record else None

    def inputs_made(self, step: Step) -> dict[str, str | None]:
        return {d.name: self.made(d) for d in self.dependencies(step)}

    def _data_identity(self, item: Input) -> str:
        """A local file's content hash; a hub dataset's commit (a branch that moves makes the
        step stale); a missing path (validation's to report) or preset name: its name."""
        recipe_dir = self.resolver.recipe_dir
        if data_kind(item.value, self.recipe.step_names, recipe_dir) == "hub":
            from lossless.engine.hub_data import at_input

            try:
                return f"hub:{self.resolver.dataset_commit(item.value)}"
            except LosslessError as error:
                raise at_input(error, self.recipe, item.path) from None
        path = local_path(item.value, recipe_dir)
        return path_identity(path) if path is not None else f"ref:{item.value}"

    def status(self, step: Step) -> StepStatus:
        fingerprint = self.fingerprint(step)
        output = self.output_dir(step)
        if isinstance(step, ApplyStep) and not self.needs_files(step):
            return StepStatus(
                step.name, step.kind, "lazy", None, ["applied on the fly"], fingerprint
            )
        record = self.state.read(step.name)
        if record is None or not output.exists():
            return StepStatus(step.name, step.kind, "missing", output, ["never ran"], fingerprint)
        if record.get("output") != str(output):
            return StepStatus(step.name, step.kind, "stale", output, ["output moved"], fingerprint)
        if record.get("fingerprint") != fingerprint.value:
            reasons = fingerprint.changes_from(record.get("components", {}))
            return StepStatus(
                step.name, step.kind, "stale", output, reasons or ["changed"], fingerprint
            )
        damaged = output_differences(output, full=self.options.verify)
        if damaged:
            return StepStatus(step.name, step.kind, "stale", output, damaged, fingerprint)
        rebuilt = self.rebuilt_inputs(step, record)
        if rebuilt:
            return StepStatus(step.name, step.kind, "stale", output, rebuilt, fingerprint)
        return StepStatus(step.name, step.kind, "fresh", output, [], fingerprint)

    def rebuilt_inputs(self, step: Step, record: dict[str, object]) -> list[str]:
        """Steps rebuilt since `step` read them. Records from before `made` existed carry no
        `inputs_made`: they are trusted, as they were."""
        read = record.get("inputs_made")
        if not isinstance(read, dict) or not read:
            return []
        now = self.inputs_made(step)
        return [
            f"step:{name}: rebuilt since {step.name} read it"
            for name, made in sorted(now.items())
            if name in read and read[name] != made
        ]

    def needs_files(self, step: ApplyStep) -> bool:
        """An apply step is written out only when asked (`save`, `push_to_hub`), or when
        training/eval/generate reads it."""
        if step.save or step.name in self.recipe.pushes:  # a push uploads real files
            return True
        return any(
            isinstance(other, TrainStep | EvalStep | GenerateStep)
            and any(r.name == step.name for r in self.recipe.model_refs(other.name))
            for other in self.recipe.steps
        )


def manifest_digest(directory: Path) -> str | None:
    """A digest of what a published output holds (its manifest's file hashes)."""
    manifest = read_manifest(directory)
    return digest(manifest.get("files", {})) if manifest else None
