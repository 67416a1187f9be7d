"""From a recipe's model references to things that can be read: local dirs and TensorSources.

A reference is one of: an earlier step (its output dir, or a lazy view for an apply step or a
LoRA train step), a local directory, or a hub id (downloaded through huggingface_hub). mergekit's
`model+lora` is the model with the adapter applied lazily, through the same code as `apply:`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from lossless.errors import LosslessError
from lossless.recipe.model import (
    ApplyStep,
    EvalStep,
    GenerateStep,
    MergeStep,
    ModelRef,
    Recipe,
    Step,
    TrainStep,
)

if TYPE_CHECKING:
    from lossless.tensors.source import TensorSource

ADAPTER_CONFIG = "adapter_config.json"
# What a `generate:` step writes: chat rows, and raw-text rows when it has `text:`.
GENERATED_CHAT, GENERATED_TEXT = "data.jsonl", "text.jsonl"


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


@dataclass
class Resolver:
    """Answers "where are this reference's files" and "give me its tensors" during a run.

    `step_dirs` maps the name of every step that has run (or is fresh) to its output directory;
    the runner fills it in as it goes. `materialise` is the runner's callback that turns a lazy
    apply step into real files when a consumer needs them (training on top, evaluation).
    """

    recipe: Recipe
    step_dirs: dict[str, Path] = field(default_factory=dict)
    cache_dir: str | None = None
    allow_pickle: bool = False
    allow_non_finite: bool = False  # --allow-non-finite: NaN/Inf weights are merged as they are
    quiet: bool = False
    materialise: Callable[[ApplyStep], Path] | None = None
    locked: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # RECIPE.lock entries
    _external: dict[str, Path] = field(default_factory=dict)
    _commits: dict[str, str | None] = field(default_factory=dict)
    _dataset_commits: dict[str, str] = field(default_factory=dict)

    @property
    def recipe_dir(self) -> Path:
        return Path(self.recipe.path).resolve().parent

    def step_for(self, ref: ModelRef) -> Step | None:
        if ref.revision is None and ref.name in self.recipe.step_names:
            return self.recipe.step(ref.name)
        return None

    # ---- external references -------------------------------------------------------------

    def external_dir(self, name: str, revision: str | None = None) -> Path:
        """A local directory or hub id → a local directory (downloading if needed)."""
        key = f"{name}@{revision}" if revision else name
        if key in self._external:
            return self._external[key]
        from lossless.recipe.references import local_path

        local = local_path(name, self.recipe_dir)
        if local is not None:
            path, commit = local, None
        else:
            from lossless.hub.repos import resolve_model

            resolved = resolve_model(
                name,
                revision or self._locked_commit(name),
                cache_dir=self.cache_dir,
                allow_pickle=self.allow_pickle,
                quiet=self.quiet,
            )
            path, commit = resolved.path, resolved.commit
        self._external[key] = path
        self._commits[key] = commit
        return path

    def _locked_commit(self, name: str) -> str | None:
        entry = self.locked.get(name)
        return str(entry["commit"]) if entry and entry.get("kind") == "hub" else None

    def identity(self, name: str, revision: str | None = None) -> str:
        """What an external input *is*, for fingerprints: a hub commit or a content hash.

        Hub references are resolved to a commit without downloading, so `lossless plan` stays
        cheap; local ones are hashed (headers and sizes for weights, see fingerprint.py).
        """
        from lossless.engine.fingerprint import path_identity
        from lossless.recipe.references import local_path

        local = local_path(name, self.recipe_dir)
        if local is not None:
            return f"local:{path_identity(local)}"
        from lossless.hub.repos import resolve_commit

        pinned = revision or self._locked_commit(name)
        return f"hub:{resolve_commit(name, pinned, cache_dir=self.cache_dir)}"

    def dataset_commit(self, value: str) -> str:
        """The commit a hub dataset value (`org/set`, `org/set@v1`, `hf://datasets/org/set`) is
        read at in this run: the lock's under --locked, else resolved once (no download)."""
        if value in self._dataset_commits:
            return self._dataset_commits[value]
        entry = self.locked.get(value)
        if entry and entry.get("kind") == "hub":
            commit = str(entry["commit"])
        else:
            from lossless.hub.repos import default_cache_dir, is_offline, resolve_commit
            from lossless.recipe.references import hub_dataset_id
            from lossless.training.hub_datasets import remember_revision

            repo, revision = hub_dataset_id(value)
            # The datasets library keeps hub files in the default hub cache, not in
            # --transformers-cache (a models' cache): resolve against the same one.
            commit = resolve_commit(f"hf://datasets/{repo}", revision)
            if not is_offline():
                remember_revision(repo, revision or "main", commit, default_cache_dir())
        self._dataset_commits[value] = commit
        return commit

    def input_dirs(self, step: str) -> list[Path]:
        """Every directory a step reads: external models and the outputs of earlier steps."""
        dirs = []
        for ref in self.recipe.model_refs(step):
            dependency = self.step_for(ref)
            if dependency is None:
                dirs.append(self.external_dir(ref.name, ref.revision).resolve())
            elif dependency.name in self.step_dirs:
                dirs.append(self.step_dirs[dependency.name].resolve())
        return dirs

    # ---- data ----------------------------------------------------------------------------

    def data_files(self, name: str) -> list[Path]:
        """The files a `generate:` step wrote: data.jsonl, then text.jsonl if it has `text:`."""
        step = self.recipe.step(name)
        out = self.step_dirs.get(name)
        if not isinstance(step, GenerateStep) or out is None:
            raise LosslessError(
                f"step `{name}` has no data output (it is no generate step or did not run)"
            )
        files = [out / GENERATED_CHAT] + ([out / GENERATED_TEXT] if step.text_samples else [])
        return [f.resolve() for f in files]

    # ---- model directories ---------------------------------------------------------------

    def model_dir(self, ref: ModelRef) -> Path:
        """Real files of a full model, for training on it, evaluating it or copying its config."""
        step = self.step_for(ref)
        if ref.lora:
            raise LosslessError(
                f"`{ref}` is a model with a LoRA applied on the fly; it has no files of its own",
                hint="declare it as an `apply:` step with `save: true` to train or evaluate it",
            )
        if step is None:
            return self.external_dir(ref.name, ref.revision)
        if isinstance(step, ApplyStep) and step.name not in self.step_dirs:
            if self.materialise is None:
                raise LosslessError(f"apply step `{step.name}` has not been materialised")
            self.step_dirs[step.name] = self.materialise(step)
        out = self.step_dirs.get(step.name)
        if out is None:
            raise LosslessError(f"step `{step.name}` has no output yet (it did not run)")
        if isinstance(step, TrainStep) and is_adapter_dir(out):
            raise LosslessError(
                f"train step `{step.name}` produced an adapter, not a full model",
                hint=f"add an `apply:` step with `adapter: {step.name}` and `save: true`",
            )
        return out

    def tokenizer_dir(self, ref: ModelRef) -> Path:
        """Where the tokenizer of a reference lives (adapters and lazy views included)."""
        step = self.step_for(ref)
        if isinstance(step, ApplyStep) and step.name not in self.step_dirs:
            return self.tokenizer_dir(step.to)
        if step is not None and step.name in self.step_dirs:
            return self.step_dirs[step.name]
        return self.external_dir(ref.name, ref.revision)

    # ---- tensors -------------------------------------------------------------------------

    def adapter_dir(self, ref: ModelRef | str) -> Path:
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        step = self.step_for(ref)
        if step is not None:
            out = self.step_dirs.get(step.name)
            if out is None or not is_adapter_dir(out):
                raise LosslessError(f"step `{step.name}` did not produce a PEFT adapter")
            return out
        path = self.external_dir(ref.name, ref.revision)
        if not is_adapter_dir(path):
            raise LosslessError(
                f"`{ref}` is not a PEFT adapter: {path / ADAPTER_CONFIG} is missing",
                hint="an adapter directory holds adapter_config.json and adapter_model.safetensors",
            )
        return path

    def tensor_source(self, ref: ModelRef) -> TensorSource:
        """The tensors of a reference, lazily: adapters are applied per tensor while streaming."""
        from lossless.tensors.checkpoint import Checkpoint

        label = str(ref)
        finite = {"allow_non_finite": self.allow_non_finite}
        if ref.lora:
            base = self.tensor_source(ModelRef(ref.name, ref.revision))
            return self._adapted(base, [(self.adapter_dir(ref.lora), 1.0)], label)
        step = self.step_for(ref)
        if isinstance(step, ApplyStep) and step.name not in self.step_dirs:
            base = self.tensor_source(step.to)
            adapters = [(self.adapter_dir(use.adapter), use.weight) for use in step.adapters]
            return self._adapted(base, adapters, label)
        if isinstance(step, TrainStep):
            out = self.step_dirs[step.name]
            if is_adapter_dir(out):
                if step.base is None:
                    raise LosslessError(
                        f"train step `{step.name}` has an adapter but no base model"
                    )
                base = self.tensor_source(step.base)
                return self._adapted(base, [(out, 1.0)], label)
            return Checkpoint(out, label=label, allow_pickle=self.allow_pickle, **finite)
        if isinstance(step, MergeStep | ApplyStep):
            return Checkpoint(self.step_dirs[step.name], label=label, **finite)
        return Checkpoint(
            self.external_dir(ref.name, ref.revision),
            label=label,
            allow_pickle=self.allow_pickle,
            **finite,
        )

    def _adapted(
        self, base: TensorSource, adapters: list[tuple[Path, float]], label: str
    ) -> TensorSource:
        from lossless.tensors.adapted import AdaptedSource
        from lossless.tensors.adapters import check_fits, load_adapter

        loaded = []
        for path, weight in adapters:
            adapter = load_adapter(
                path, allow_pickle=self.allow_pickle, allow_non_finite=self.allow_non_finite
            )
            check_fits(adapter, base)
            loaded.append((adapter, weight))
        return AdaptedSource(base, loaded, label=label)


StepT = TypeVar("StepT", bound=Step)


def with_data_files(step: StepT, resolver: Resolver) -> StepT:
    """`step` with every data value that names a `generate:` step replaced by its files.

    Where a list of files is read (train `data`, `replay.data`, `ewc.data`) the name becomes all
    of them; where one file is read (`{path: ...}`, eval datasets, `prompts`) it becomes the chat
    rows, data.jsonl. The positions come from the one walk (`recipe.inputs`), so the step code
    only ever sees paths:

        replay: {data: rehearsal}  →  replay: {data: [/work/.lossless/rehearsal/data.jsonl]}
    """
    items = [
        item
        for item in resolver.recipe.inputs_of(step.name, "data")
        if item.value in resolver.recipe.step_names
    ]
    if not items or isinstance(step, MergeStep | ApplyStep):
        return step
    block = _step_block(step)
    # Deepest and last first, so splicing a list item does not move the ones still to do.
    for item in sorted(items, key=_path_order, reverse=True):
        keys = item.path[3:]  # (document, section, step name, *keys inside the block)
        files = [str(f) for f in resolver.data_files(item.value)]
        single = keys[-1] == "path" or isinstance(step, EvalStep | GenerateStep)
        block = _replace(block, keys, files[:1] if single else files, single)
    if isinstance(step, TrainStep):  # settings are typed: rebuild them from the new block
        from lossless.recipe.build import build_train

        return cast(StepT, build_train(step.name, block))
    changes: dict[str, Any] = {"settings": block}
    if isinstance(step, EvalStep):
        changes["data"] = block.get("data", step.data)
    elif isinstance(step, GenerateStep):
        changes = {"prompts": block["prompts"]}
    return dataclasses.replace(step, **changes)


def _path_order(item: Any) -> tuple[tuple[int, Any], ...]:
    return tuple((0, k) if isinstance(k, int) else (1, str(k)) for k in item.path)


def _step_block(step: Step) -> dict[str, Any]:
    if isinstance(step, TrainStep):
        return dict(step.block)
    if isinstance(step, EvalStep):
        return dict(step.settings)
    assert isinstance(step, GenerateStep)
    return {"prompts": step.prompts}


def _replace(node: Any, keys: tuple[Any, ...], files: list[str], single: bool) -> Any:
    """A copy of `node` with the value at `keys` replaced by `files` (spliced into a list)."""
    key, rest = keys[0], keys[1:]
    if isinstance(node, list):
        if rest:
            return [*node[:key], _replace(node[key], rest, files, single), *node[key + 1 :]]
        return [*node[:key], *files, *node[key + 1 :]]
    if rest:
        return {**node, key: _replace(node[key], rest, files, single)}
    return {**node, key: files[0] if single else files}


def merge_inputs(step: MergeStep) -> list[ModelRef]:
    """Every model a merge stage reads, base first, each once."""
    refs = [step.base_model] if step.base_model is not None else []
    refs += [m.model for m in step.models]
    for slice_ in step.slices:
        refs += [s.model for s in slice_.sources]
        refs += [slice_.base_model] if slice_.base_model is not None else []
    unique: dict[str, ModelRef] = {}
    for ref in refs:
        unique.setdefault(str(ref), ref)
    return list(unique.values())


def sources_for(step: MergeStep, resolver: Resolver) -> Mapping[str, TensorSource]:
    """Every model a merge stage reads, keyed by `str(ModelRef)` as the planner expects."""
    return {str(ref): resolver.tensor_source(ref) for ref in merge_inputs(step)}
