"""Merge-stage checks, driven only by the METHODS table: model counts, base model, parameter
names, types and ranges, layer ranges. Never hard-codes a method's parameters; the input rules
(base model, model counts) are `MethodSpec.input_problems`, the same the merge planner raises.

Parameter lookup follows mergekit: a per-model parameter is read from the model's (or slice
source's) `parameters`, then the slice's, the module's, then the top-level `parameters`; a global
parameter (slerp's `t`, ties' `normalize`) only from slice, module and top-level `parameters`, so
written on one model it has no effect.
"""

from __future__ import annotations

import math
from typing import Any

from lossless.errors import YamlPath
from lossless.methods.table import METHODS, MethodSpec, ParamSpec
from lossless.recipe.model import ModelRef
from lossless.recipe.references import did_you_mean
from lossless.validation.checker import MISPLACED, Checker

# Keys mergekit 0.1.5 accepts but no merge method reads: kept for compatibility, said aloud.
IGNORED_KEYS = {
    "residual_weight": "no merge method of mergekit uses a slice's residual_weight",
}


def _leaves(value: Any) -> list[Any]:
    """The scalar values inside a parameter setting (scalar, gradient, {filter, value} list)."""
    if isinstance(value, dict):
        return _leaves(value.get("value"))
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _check_value(
    c: Checker, d: int, path: YamlPath, name: str, spec: ParamSpec, method: str
) -> Any:
    for leaf in _leaves(c.get(d, path)):
        if spec.kind == "bool":
            ok = isinstance(leaf, bool)
            expected = "true or false"
        elif spec.kind == "int":
            ok = isinstance(leaf, int) and not isinstance(leaf, bool)
            expected = "an integer"
        else:
            ok = isinstance(leaf, (int, float)) and not isinstance(leaf, bool)
            expected = "a number"
        if not ok:
            c.add(
                d,
                path,
                f"`{name}` of {method} must be {expected}",
                expected=expected,
                got=repr(leaf),
                code="param-type",
            )
            continue
        if spec.kind == "bool":
            continue
        if not math.isfinite(leaf):
            c.add(
                d,
                path,
                f"`{name}` of {method} is {leaf!r}: a merge parameter must be a finite number",
                expected="a finite number",
                got=repr(leaf),
                code="non-finite",
                hint="`.nan` and `.inf` in YAML are numbers that poison every merged tensor",
            )
            continue
        low_bad = spec.minimum is not None and (
            leaf < spec.minimum or (spec.exclusive_minimum and leaf == spec.minimum)
        )
        high_bad = spec.maximum is not None and leaf > spec.maximum
        if low_bad or high_bad:
            c.add(
                d,
                path,
                f"`{name}` of {method} is out of range",
                expected=spec.describe_range(),
                got=repr(leaf),
                code="param-range",
                hint=f"{name} must be in {spec.describe_range()}",
            )
    return None


def _check_params(
    c: Checker, d: int, path: YamlPath, params: Any, spec: MethodSpec, model_level: bool
) -> None:
    if not isinstance(params, dict):
        return
    known = {**spec.model_params, **spec.global_params}
    for name in params:
        where = (*path, name)
        if name in MISPLACED and name not in known:
            c.add(
                d,
                where,
                f"`{name}` inside `parameters` has no effect",
                at_key=True,
                severity="warning",
                code="misplaced-key",
                hint=f"`{name}` is a top-level key of the merge config; move it out of `parameters`",
            )
        elif name not in known:
            names = ", ".join(sorted(known)) or "none"
            c.add(
                d,
                where,
                f"`{name}` is not a parameter of {spec.name} (it takes: {names})",
                at_key=True,
                code="unknown-param",
                hint=did_you_mean(name, known) or "remove it, or use a method that takes it",
            )
        else:
            if model_level and name not in spec.model_params:
                c.add(
                    d,
                    where,
                    f"`{name}` is a global parameter of {spec.name}; per model it has no effect",
                    at_key=True,
                    severity="warning",
                    code="misplaced-param",
                    hint="move it to the top-level (or slice) `parameters`",
                )
            _check_value(c, d, where, name, known[name], spec.name)


def _name(entry: Any) -> str | None:
    if isinstance(entry, dict) and isinstance(entry.get("model"), str):
        return ModelRef.parse(entry["model"]).name
    return None


def _check_inputs(
    c: Checker,
    d: int,
    path: YamlPath,
    container: dict[str, Any],
    spec: MethodSpec,
    base: str | None,
    outer_params: list[Any],
    reported: set[tuple[YamlPath, str]],
) -> None:
    """`models:` or `slices:` of a stage (or of one module): counts, base, params, layer ranges."""
    has_param = lambda name, *levels: any(isinstance(p, dict) and name in p for p in levels)  # noqa: E731
    # (where the inputs are, the inputs, their base model, parameter levels, where that base is set)
    groups: list[tuple[YamlPath, list[Any], str | None, list[Any], YamlPath]] = []
    if isinstance(container.get("models"), list):
        groups.append(((*path, "models"), container["models"], base, outer_params, ("base_model",)))
    if isinstance(container.get("slices"), list):
        for i, piece in enumerate(container["slices"]):
            if isinstance(piece, dict) and isinstance(piece.get("sources"), list):
                own = isinstance(piece.get("base_model"), str)
                b = ModelRef.parse(piece["base_model"]).name if own else base
                groups.append(
                    (
                        (*path, "slices", i, "sources"),
                        piece["sources"],
                        b,
                        [piece.get("parameters"), *outer_params],
                        (*path, "slices", i, "base_model") if own else ("base_model",),
                    )
                )
                _check_params(
                    c,
                    d,
                    (*path, "slices", i, "parameters"),
                    piece.get("parameters"),
                    spec,
                    model_level=False,
                )
                _check_layer_counts(c, d, (*path, "slices", i, "sources"), piece["sources"], spec)
                for key, why in IGNORED_KEYS.items():
                    if key in piece:
                        c.add(
                            d,
                            (*path, "slices", i, key),
                            f"`{key}` is ignored: {why}",
                            at_key=True,
                            severity="warning",
                            code="ignored-key",
                            hint=f"remove `{key}`; the merge is the same without it",
                        )
    for gpath, entries, gbase, levels, where in groups:
        names = [_name(e) or "?" for e in entries]
        if gpath[-1] == "models" and gbase and gbase not in names:
            names.append(gbase)  # mergekit appends the base model to `models:`
        for problem in spec.input_problems(names, gbase):
            # the base rules are reported where the base is (or should be) set, once
            at = {"unused-base": where, "missing-base": ("merge_method",)}.get(problem.code, gpath)
            if problem.code in ("unused-base", "missing-base"):
                if (at, problem.message) in reported:
                    continue
                reported.add((at, problem.message))
            c.add(
                d,
                at,
                problem.message,
                at_key=problem.code != "missing-base",  # at the method's name, else at the key
                expected=problem.expected,
                got=problem.got,
                hint=problem.hint,
                severity=problem.severity,
                code=problem.code,
            )
        uses_base = spec.base != "unused"
        others = [
            (i, e) for i, e in enumerate(entries) if not (uses_base and gbase and _name(e) == gbase)
        ]
        for i, entry in others:
            if not isinstance(entry, dict):
                continue
            for pname, pspec in spec.model_params.items():
                if pspec.required and not has_param(pname, entry.get("parameters"), *levels):
                    c.add(
                        d,
                        (*gpath, i),
                        f"model `{_name(entry)}` needs parameter `{pname}` for {spec.name}",
                        code="missing-param",
                        hint=f"add `parameters: {{{pname}: ...}}` to this model or to the top-level parameters",
                    )
        for i, entry in enumerate(entries):
            if isinstance(entry, dict):
                _check_params(
                    c, d, (*gpath, i, "parameters"), entry.get("parameters"), spec, model_level=True
                )
                lr = entry.get("layer_range")
                if (
                    isinstance(lr, list)
                    and len(lr) == 2
                    and all(isinstance(x, int) for x in lr)
                    and lr[0] >= lr[1]
                ):
                    c.add(
                        d,
                        (*gpath, i, "layer_range"),
                        f"layer_range [{lr[0]}, {lr[1]}] is empty: start must be less than end",
                        expected="[start, end) with start < end",
                        got=str(lr),
                        code="layer-range",
                        hint="layer_range is [first layer, last layer + 1), e.g. [0, 16]",
                    )
        for pname, pspec in spec.global_params.items():
            if pspec.required and not has_param(pname, *levels):
                c.add(
                    d,
                    (*path, "merge_method"),
                    f"{spec.name} needs parameter `{pname}`",
                    code="missing-param",
                    hint=f"add `parameters: {{{pname}: ...}}` at the top level",
                )


def _check_layer_counts(
    c: Checker, d: int, path: YamlPath, sources: list[Any], spec: MethodSpec
) -> None:
    spans = {}
    for i, s in enumerate(sources):
        lr = s.get("layer_range") if isinstance(s, dict) else None
        if (
            isinstance(lr, list)
            and len(lr) == 2
            and all(isinstance(x, int) for x in lr)
            and lr[1] > lr[0]
        ):
            spans[i] = lr[1] - lr[0]
    if len(set(spans.values())) > 1:
        c.add(
            d,
            path,
            "the sources of one slice cover different numbers of layers: "
            + ", ".join(f"{n}" for n in spans.values()),
            code="layer-range",
            hint="every source of a slice must have a layer_range of the same length",
        )


def check_merge(c: Checker, d: int, doc: dict[str, Any]) -> None:
    shapes = [k for k in ("models", "slices", "modules") if doc.get(k)]
    if len(shapes) != 1:
        c.add(
            d,
            ("merge_method",) if "merge_method" in doc else (),
            "a merge stage needs exactly one of `models`, `slices` or `modules`"
            + (f"; got {', '.join(shapes)}" if shapes else ""),
            code="merge-shape",
        )
    if "tokenizer_source" in doc and "tokenizer" in doc:
        c.add(
            d,
            ("tokenizer",),
            "`tokenizer_source` and `tokenizer` cannot both be set",
            at_key=True,
            code="merge-shape",
            hint="keep `tokenizer: {source: ...}` (it supersedes tokenizer_source)",
        )
    spec = METHODS.get(doc.get("merge_method"))  # type: ignore[arg-type]
    if spec is None:
        return  # missing or unknown: the schema pass reported it with a did-you-mean
    base = doc.get("base_model") if isinstance(doc.get("base_model"), str) else None
    base_name = ModelRef.parse(base).name if base else None
    _check_params(c, d, ("parameters",), doc.get("parameters"), spec, model_level=False)
    reported: set[tuple[YamlPath, str]] = set()  # a base problem shared by groups, said once
    _check_inputs(c, d, (), doc, spec, base_name, [doc.get("parameters")], reported)
    if isinstance(doc.get("modules"), dict):
        for mname, module in doc["modules"].items():
            if mname != "default":
                c.add(
                    d,
                    ("modules", mname),
                    f"module `{mname}`: only `default` (the one module of a text-only model) "
                    "can be merged here; multi-module (vision-language) models are not supported yet",
                    at_key=True,
                    code="unsupported",
                    hint="rename it `default`, or write the merge with `models:` or `slices:`",
                )
            if isinstance(module, dict):
                _check_params(
                    c, d, ("modules", mname, "parameters"), module.get("parameters"), spec, False
                )
                _check_inputs(
                    c,
                    d,
                    ("modules", mname),
                    module,
                    spec,
                    base_name,
                    [module.get("parameters"), doc.get("parameters")],
                    reported,
                )
