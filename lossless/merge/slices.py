"""The inputs of a merge as mergekit sees them: slices of layer ranges, each with a base model.

`models:` becomes one slice over every layer, the base appended when it is not listed (mergekit
0.1.5 `MergePlanner.normalize_config`); `slices:` stay as written. Everything here checks names,
layer counts and families only, so a bad recipe fails before any tensor is read or written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lossless.errors import LosslessError
from lossless.merge import architecture as arch
from lossless.methods.table import MethodSpec
from lossless.recipe.model import MergeStep, Params
from lossless.tensors.source import TensorSource

CRIMES_HINT = "the models' architectures differ; pass --allow-crimes to merge what matches anyway"


@dataclass(frozen=True)
class SliceSource:
    """One source of a slice: `model` is its key in `sources`; layers [start, end)."""

    model: str
    start: int
    end: int
    parameters: Params = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSlice:
    where: str  # "slices[1]" or "models", for messages
    inputs: tuple[SliceSource, ...]
    parameters: Params
    base: str | None  # the base model key in effect for this slice

    @property
    def length(self) -> int:
        return self.inputs[0].end - self.inputs[0].start


@dataclass(frozen=True)
class _Layout:
    names: list[str]
    name_set: set[str]
    prefix: str | None  # "model.layers"
    layers: dict[int, list[str]]  # layer index → its tensor names


@dataclass
class ModelIndex:
    """Names, layer layout and configs of the input models, read once per model."""

    sources: Mapping[str, TensorSource]
    _layouts: dict[str, _Layout] = field(default_factory=dict)

    def source(self, key: str) -> TensorSource:
        if key not in self.sources:
            raise LosslessError(f"model {key!r} is used by the merge but was not loaded")
        return self.sources[key]

    def _layout(self, key: str) -> _Layout:
        # Cached: the planner asks per tensor, and a 70B checkpoint has ~700 names per model.
        if key not in self._layouts:
            names = list(self.source(key).tensor_names())
            prefix = arch.layer_prefix(names)
            self._layouts[key] = _Layout(
                names, set(names), prefix, arch.layer_tensors(names, prefix)
            )
        return self._layouts[key]

    def names(self, key: str) -> list[str]:
        return self._layout(key).names

    def name_set(self, key: str) -> set[str]:
        return self._layout(key).name_set

    def prefix(self, key: str) -> str | None:
        return self._layout(key).prefix

    def layers(self, key: str) -> dict[int, list[str]]:
        return self._layout(key).layers

    def num_layers(self, key: str) -> int:
        return arch.count_layers(self.source(key).config, self.names(key))


def normalize_slices(step: MergeStep, models: ModelIndex, spec: MethodSpec) -> list[OutputSlice]:
    """mergekit's `models` → one slice; `slices` as written, with each slice's base resolved."""
    top_base = str(step.base_model) if step.base_model else None
    if step.modules and list(step.modules) != ["default"]:
        raise LosslessError(
            f"merge {step.name!r}: modules {', '.join(step.modules)}: only `default` (the one "
            "module of a text-only model) is supported, not multi-module models",
            hint="write the merge with `models:` or `slices:`, or name its module `default`",
        )
    if step.models:
        inputs = [
            SliceSource(str(m.model), 0, models.num_layers(str(m.model)), m.parameters)
            for m in step.models
        ]
        if top_base and top_base not in {i.model for i in inputs}:
            inputs.append(SliceSource(top_base, 0, models.num_layers(top_base)))
        slices = [OutputSlice("models", tuple(inputs), {}, top_base)]
    elif step.slices:
        slices = []
        for n, given in enumerate(step.slices):
            inputs = []
            for src in given.sources:
                key = str(src.model)
                start, end = src.layer_range or (0, models.num_layers(key))
                inputs.append(SliceSource(key, start, end, src.parameters))
            base = str(given.base_model) if given.base_model else top_base
            slices.append(OutputSlice(f"slices[{n}]", tuple(inputs), given.parameters, base))
    else:
        raise LosslessError(f"merge {step.name!r} has neither `models` nor `slices`")
    for s in slices:
        check_slice(s, models, spec)
    return slices


def check_slice(s: OutputSlice, models: ModelIndex, spec: MethodSpec) -> None:
    keys = [i.model for i in s.inputs]
    if len(set(keys)) != len(keys):
        raise LosslessError(f"{s.where}: a model is listed twice ({', '.join(keys)})")
    lengths = {i.model: i.end - i.start for i in s.inputs}
    if len(set(lengths.values())) != 1:
        ranges = ", ".join(f"{i.model} [{i.start}, {i.end})" for i in s.inputs)
        raise LosslessError(
            f"{s.where}: every source must cover the same number of layers; got {ranges}",
            hint="layer_range is half-open: [0, 4] is layers 0, 1, 2, 3",
        )
    for i in s.inputs:
        have = models.num_layers(i.model)
        if not 0 <= i.start < i.end <= have:
            raise LosslessError(
                f"{s.where}: layer_range [{i.start}, {i.end}) of {i.model} is outside its "
                f"{have} layers",
                hint=f"use a range within [0, {have}) with start < end",
            )
    for problem in spec.input_problems(keys, s.base):
        if problem.severity == "error":
            raise LosslessError(f"{s.where}: {problem.message}", hint=problem.hint)


def check_families(keys: Iterable[str], models: ModelIndex, allow_crimes: bool) -> None:
    seen: dict[tuple[str, tuple[str, ...]], str] = {}
    for key in keys:
        seen.setdefault(arch.family(models.source(key).config), key)
    if len(seen) > 1 and not allow_crimes:
        parts = [f"{key} is {fam[0]} {'/'.join(fam[1])}".strip() for fam, key in seen.items()]
        raise LosslessError(f"models of different families: {'; '.join(parts)}", hint=CRIMES_HINT)


def check_layer_names(s: OutputSlice, offset: int, models: ModelIndex, allow_crimes: bool) -> None:
    """Every source's layer must hold the same tensors as the first source's (missing → in job)."""
    ref = s.inputs[0]
    rests = {arch.layer_suffix(n) for n in models.layers(ref.model).get(ref.start + offset, [])}
    if not rests:
        raise LosslessError(f"{s.where}: {ref.model} has no tensors for layer {ref.start + offset}")
    for i in s.inputs[1:]:
        own = {arch.layer_suffix(n) for n in models.layers(i.model).get(i.start + offset, [])}
        extra = sorted(own - rests)
        if extra and not allow_crimes:
            raise LosslessError(
                f"{s.where}: layer {i.start + offset} of {i.model} has tensors that layer "
                f"{ref.start + offset} of {ref.model} lacks: {', '.join(extra[:5])}",
                hint=CRIMES_HINT,
            )


def check_extra_non_layer(
    expected: list[str], keys: Iterable[str], models: ModelIndex, allow_crimes: bool
) -> None:
    if allow_crimes:
        return
    known = set(expected) | {e for embeds in arch.TIED_HEADS.values() for e in embeds}
    for key in sorted(keys):
        extra = [
            n
            for n in arch.non_layer_tensors(models.names(key), models.prefix(key))
            if n not in known
        ]
        if extra:
            raise LosslessError(
                f"{key} has tensors the output model lacks: {', '.join(extra[:5])}",
                hint=CRIMES_HINT,
            )
