"""A MergeStep plus the inputs' tensor names and shapes → one TensorJob per output tensor.

Pure data: only names, shapes, dtypes and configs are read (through `TensorSource`), never a
tensor. Facts this follows, checked against mergekit 0.1.5 (`plan.py`, `config.py`, `merge.py`):
- `models:` becomes one slice over all layers whose sources carry `models[].parameters`; a
  `base_model` missing from `models` is appended to that slice (with no parameters of its own).
- `slices:`: every source of a slice has the same number of layers (`layer_range` is half-open);
  output layers are numbered consecutively over the slices, so overlapping ranges stack layers.
  A slice's `base_model` overrides the top-level one and must be one of the slice's sources.
- layer i of an n-layer slice resolves gradients at t = i / (n - 1) (t = 1 when n = 1); the
  embeddings come from the first slice's models, the final norm and head from the last slice's,
  both at t = 0.
- global parameters see the output tensor name in filters; per-model ones see that model's own
  tensor name (they differ in a frankenmerge). The base model's per-model parameters are not
  resolved when the method takes a base: its tensor is passed apart, as `base`. A method that
  takes no base (linear, passthrough, karcher ...) merges an appended base like any other model,
  so `linear` with a `base_model` outside `models` needs a weight for it (top-level, say).
- computation runs in `dtype` (lossless: float32 when unset; mergekit uses the inputs' dtype
  and upcasts inside each method); the output is `out_dtype`, else `dtype`, else the inputs'.
- config.json comes from the top-level `base_model`, else the first model.
Chosen here, where mergekit has no rule or fails late: an output head (lm_head) is not written
when the output config ties it to the embeddings; a model without a head contributes its
embedding instead (mergekit's `tied_names`). Without `allow_crimes`, any missing, extra or
differently shaped tensor is an error before anything is written; with it, the inputs that lack
a tensor (or disagree with the first input's shape) are left out of that tensor's job, and a job
the method can no longer compute copies the first input's tensor unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lossless.errors import LosslessError
from lossless.merge import architecture as arch
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.merge.params import layer_t, resolve_first
from lossless.merge.slices import (
    CRIMES_HINT,
    ModelIndex,
    OutputSlice,
    check_extra_non_layer,
    check_families,
    check_layer_names,
    normalize_slices,
)
from lossless.methods.table import METHODS, MethodSpec, ParamSpec
from lossless.recipe.model import MergeStep, Params
from lossless.tensors.source import TensorSource

# safetensors' dtype spelling → torch's name ("BF16" → "bfloat16").
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
_RECIPE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                  "float": "float32", "fp64": "float64", "double": "float64"}  # fmt: skip
_FLOAT_RANK = {"float16": 1, "bfloat16": 1, "float32": 2, "float64": 3}


def _normalize_dtype(name: str | None) -> str | None:
    if not name:
        return None
    name = name.removeprefix("torch.")
    return _RECIPE_DTYPES.get(name, name)


def _promoted_dtype(dtypes: Iterable[str]) -> str:
    """One dtype for mixed inputs: equal → it; bf16 + f16 → float32; else the widest float."""
    names = {_SAFETENSORS_DTYPES.get(d, d.lower()) for d in dtypes}
    if len(names) == 1:
        return names.pop()
    floats = [n for n in names if n in _FLOAT_RANK]
    if not floats:
        return sorted(names)[0]
    widest = max(_FLOAT_RANK[n] for n in floats)
    return {1: "float32", 2: "float32", 3: "float64"}[widest]


def _same_shape(a: tuple[int, ...], b: tuple[int, ...], free_axis: int | None) -> bool:
    """Equal shapes, or equal but for `free_axis` (the vocabulary axis when retokenizing)."""
    if a == b:
        return True
    if free_axis is None or len(a) != len(b):
        return False
    return all(x == y for k, (x, y) in enumerate(zip(a, b, strict=True)) if k != free_axis)


def _coerce(value: Any, spec: ParamSpec, what: str) -> Any:
    """A resolved value in the parameter's kind (a gradient of ints may give 2.5 → error)."""
    try:
        if spec.kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("true", "1", "yes")
            return bool(value)
        if spec.kind == "int":
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        return float(value)
    except (TypeError, ValueError):
        raise LosslessError(f"{what} = {value!r} is not a {spec.kind}") from None


@dataclass
class _Planner:
    step: MergeStep
    spec: MethodSpec
    models: ModelIndex
    allow_crimes: bool
    compute_dtype: str
    out_dtype: str | None
    retokenized: bool  # tokenizer_source / tokenizer set: embeddings may differ in vocabulary
    jobs: list[TensorJob] = field(default_factory=list)

    def job(
        self, output: str, names: dict[str, str], s: OutputSlice, t: float, layer: int | None
    ) -> None:
        """Add the job computing `output` from `names` (model key → its tensor name)."""
        # The first input that has the tensor sets the shape the others must match; with a
        # tokenizer_source the vocabulary axis may differ (the executor aligns the tokens).
        present = {
            m: tuple(self.models.source(m).shape(n))
            for m, n in names.items()
            if n in self.models.name_set(m)
        }
        ref_model = next((m for m in names if m in present), None)
        vocab_axis = arch.vocab_axis(output)
        free_axis = vocab_axis if self.retokenized else None
        problems = []
        for model, name in names.items():
            if model not in present:
                has = f"; {ref_model} has it as {names[ref_model]}" if ref_model else ""
                problems.append(f"{model} has no tensor {name} (needed for {output}){has}")
            elif ref_model and not _same_shape(present[model], present[ref_model], free_axis):
                problems.append(
                    f"tensor {output} has shape {present[ref_model]} in {ref_model} "
                    f"({names[ref_model]}) but {present[model]} in {model} ({name})"
                )
        if problems and not self.allow_crimes:
            raise LosslessError(problems[0], hint=CRIMES_HINT)
        if ref_model is None:
            return  # allow_crimes and no input has it: nothing to write
        ref_shape = present[ref_model]
        kept = {
            m: names[m]
            for m in names
            if m in present and _same_shape(present[m], ref_shape, free_axis)
        }
        base = s.base if self.spec.base != "unused" else None
        others = [m for m in kept if m != base]
        method = self.spec.name
        if (base is not None and base not in kept) or len(others) < self.spec.min_models:
            method, base, others = "passthrough", None, [ref_model]  # crimes: copy what exists
        spec = METHODS[method]
        out_dtype = self.out_dtype or _promoted_dtype(
            self.models.source(m).dtype(n) for m, n in kept.items()
        )
        self.jobs.append(
            TensorJob(
                output=output,
                method=method,
                sources=tuple(TensorRef(m, kept[m]) for m in others),
                base=TensorRef(base, kept[base]) if base is not None else None,
                # per-model filters see each model's own tensor name (mergekit: the input weight's
                # name, so a tied model's head is still called lm_head.weight)
                model_params=tuple(
                    self.model_params(spec, s, m, kept[m] if layer is not None else output, t)
                    for m in others
                ),
                params=self.global_params(spec, s, output, t),
                shape=ref_shape,
                out_dtype=out_dtype,
                compute_dtype=self.compute_dtype,
                layer=layer,
                vocab_axis=vocab_axis,
            )
        )

    def global_params(
        self, spec: MethodSpec, s: OutputSlice, output: str, t: float
    ) -> dict[str, Any]:
        levels = [s.parameters, self.step.module_parameters, self.step.parameters]
        return {
            name: self.resolve(levels, name, p, output, t, f"parameter {name} of {output}")
            for name, p in spec.global_params.items()
        }

    def model_params(
        self, spec: MethodSpec, s: OutputSlice, model: str, tensor: str, t: float
    ) -> dict[str, Any]:
        own = [i.parameters for i in s.inputs if i.model == model]
        levels = [*own, s.parameters, self.step.module_parameters, self.step.parameters]
        return {
            name: self.resolve(
                levels, name, p, tensor, t, f"parameter {name} of {model} for {tensor}"
            )
            for name, p in spec.model_params.items()
        }

    def resolve(
        self, levels: list[Params], name: str, p: ParamSpec, tensor: str, t: float, what: str
    ) -> Any:
        value = resolve_first(levels, name, tensor_name=tensor, t=t)
        if value is None:
            if p.required:
                raise LosslessError(
                    f"merge method {self.step.merge_method} needs {what}",
                    hint=f"set `{name}` under the model's `parameters:` or the top-level `parameters:`",
                )
            value = p.default
        return _coerce(value, p, what)


def build_plan(
    step: MergeStep, sources: Mapping[str, TensorSource], *, allow_crimes: bool = False
) -> MergePlan:
    """Every output tensor of `step` as a TensorJob, in checkpoint order (embeddings, layers, head)."""
    spec = METHODS.get(step.merge_method)
    if spec is None:
        raise LosslessError(
            f"unknown merge method {step.merge_method!r}", hint=f"one of: {', '.join(METHODS)}"
        )
    models = ModelIndex(sources)
    slices = normalize_slices(step, models, spec)
    used = list(
        dict.fromkeys(
            [i.model for s in slices for i in s.inputs] + [s.base for s in slices if s.base]
        )
    )
    check_families(used, models, allow_crimes)
    config_source = str(step.base_model) if step.base_model else slices[0].inputs[0].model
    out_source = models.source(config_source)
    planner = _Planner(
        step, spec, models, allow_crimes,
        compute_dtype=_normalize_dtype(step.dtype) or "float32",
        out_dtype=_normalize_dtype(step.out_dtype) or _normalize_dtype(step.dtype),
        retokenized=bool(step.tokenizer_source or step.tokenizer),
    )  # fmt: skip

    out_prefix = (
        models.prefix(config_source) or models.prefix(slices[0].inputs[0].model) or "model.layers"
    )
    ref_names = arch.non_layer_tensors(models.names(config_source), models.prefix(config_source))
    involved = {i.model for s in (slices[0], slices[-1]) for i in s.inputs}
    heads = [
        h
        for h in arch.TIED_HEADS
        if any(h in models.name_set(m) for m in involved | {config_source})
    ]
    non_layer = list(dict.fromkeys(ref_names + heads))
    out_ties = arch.ties_embeddings(out_source.config, models.names(config_source))
    check_extra_non_layer(non_layer, involved, models, allow_crimes)

    for name in (n for n in non_layer if arch.is_pre_weight(n)):
        planner.job(name, _non_layer_names(name, slices[0], models), slices[0], 0.0, None)
    out_index = 0
    for s in slices:
        for offset in range(s.length):
            t = layer_t(offset, s.length)
            ref = s.inputs[0]
            check_layer_names(s, offset, models, allow_crimes)
            for ref_name in models.layers(ref.model).get(ref.start + offset, []):
                rest = arch.layer_suffix(ref_name)
                names = {
                    i.model: arch.layer_name(models.prefix(i.model) or "", i.start + offset, rest)
                    for i in s.inputs
                }
                planner.job(arch.layer_name(out_prefix, out_index, rest), names, s, t, out_index)
            out_index += 1
    for name in (n for n in non_layer if not arch.is_pre_weight(n)):
        if name in arch.TIED_HEADS and out_ties:
            continue  # the output config ties the head to the embeddings: transformers rebuilds it
        planner.job(name, _non_layer_names(name, slices[-1], models), slices[-1], 0.0, None)

    updates: dict[str, Any] = {}
    key = arch.layer_count_key(out_source.config)
    if key is not None:
        updates[key] = out_index
    return MergePlan(jobs=tuple(planner.jobs), config_updates=updates, config_source=config_source)


def _non_layer_names(name: str, s: OutputSlice, models: ModelIndex) -> dict[str, str]:
    """Each input's tensor for non-layer `name`; a model without the head gives its embedding."""
    names = {}
    for i in s.inputs:
        present = models.name_set(i.model)
        tied = arch.tied_embedding(name, present) if name not in present else None
        names[i.model] = tied or name
    return names


def describe_params(plan: MergePlan) -> list[dict[str, Any]]:
    """Rows (layer, tensor, model, param, value) for `lossless plan --params`; model "*" = global."""
    rows: list[dict[str, Any]] = []
    for job in plan.jobs:
        per_model = [("*", job.params)]
        per_model += [
            (ref.model, values) for ref, values in zip(job.sources, job.model_params, strict=True)
        ]
        for model, values in per_model:
            for name, value in values.items():
                rows.append(
                    {
                        "layer": job.layer,
                        "tensor": job.output,
                        "model": model,
                        "param": name,
                        "value": value,
                    }
                )
    return rows
