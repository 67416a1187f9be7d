"""Checks the schema cannot express: method rules, parameter ranges, references, cycles.

Runs on every document even when the schema pass found errors, so one run reports everything; each
check therefore looks at types defensively and skips what it cannot read. The method rules come
only from `lossless.methods.table.METHODS` (model counts, base, parameter specs): adding a method
there is enough for validation to know it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from lossless.build import is_merge_document, stage_name
from lossless.errors import Problem, YamlPath
from lossless.graph import describe_cycle, find_cycles
from lossless.methods.table import METHODS, MethodSpec, ParamSpec
from lossless.recipe import ModelRef
from lossless.refs import (
    UnknownReference,
    classify_name,
    did_you_mean,
    local_path,
    read_model_config,
)
from lossless.yaml_io import Positions, source_line

# Top-level mergekit keys that people paste inside `parameters:`, where mergekit ignores them.
_MISPLACED = {
    "tokenizer_source",
    "tokenizer",
    "dtype",
    "out_dtype",
    "base_model",
    "merge_method",
    "chat_template",
    "models",
    "slices",
    "layer_range",
    "name",
}


@dataclass
class Checker:
    file: str
    lines: list[str]
    positions: list[Positions]
    recipe_dir: Path | None
    problems: list[Problem] = field(default_factory=list)
    step_names: set[str] = field(default_factory=set)

    def add(
        self, doc: int, path: YamlPath, message: str, *, at_key: bool = False, **kw: Any
    ) -> None:
        pos = self.positions[doc]
        line, col = pos.key_at(path) if at_key else pos.value_at(path)
        self.problems.append(
            Problem(
                message,
                file=self.file,
                path=path,
                line=line,
                col=col,
                source_line=source_line(self.lines, line),
                **kw,
            )
        )


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
    for leaf in _leaves(_get(c, d, path)):
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


_DOCS: list[Any] = []  # the documents being checked (set by check_documents)


def _get(c: Checker, d: int, path: YamlPath) -> Any:
    node: Any = _DOCS[d]
    for part in path:
        node = node[part]
    return node


def _check_params(
    c: Checker, d: int, path: YamlPath, params: Any, spec: MethodSpec, model_level: bool
) -> None:
    if not isinstance(params, dict):
        return
    known = {**spec.model_params, **spec.global_params}
    for name in params:
        where = (*path, name)
        if name in _MISPLACED:
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
                severity="warning",
                code="unknown-param",
                hint=did_you_mean(name, known) or "remove it: the merge ignores it",
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
) -> None:
    """`models:` or `slices:` of a stage (or of one module): counts, base, params, layer ranges."""
    has_param = lambda name, *levels: any(isinstance(p, dict) and name in p for p in levels)  # noqa: E731
    groups: list[tuple[YamlPath, list[Any], str | None, list[Any]]] = []
    if isinstance(container.get("models"), list):
        groups.append(((*path, "models"), container["models"], base, outer_params))
    if isinstance(container.get("slices"), list):
        for i, piece in enumerate(container["slices"]):
            if isinstance(piece, dict) and isinstance(piece.get("sources"), list):
                slice_base = (
                    piece.get("base_model") if isinstance(piece.get("base_model"), str) else base
                )
                b = ModelRef.parse(slice_base).name if slice_base else None
                groups.append(
                    (
                        (*path, "slices", i, "sources"),
                        piece["sources"],
                        b,
                        [piece.get("parameters"), *outer_params],
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
    for gpath, entries, gbase, levels in groups:
        uses_base = spec.base != "unused"
        others = [
            (i, e) for i, e in enumerate(entries) if not (uses_base and gbase and _name(e) == gbase)
        ]
        count = len(others)
        if count < spec.min_models or (spec.max_models is not None and count > spec.max_models):
            want = (
                f"exactly {spec.min_models}"
                if spec.max_models == spec.min_models
                else f"at least {spec.min_models}"
                if spec.max_models is None
                else f"{spec.min_models} to {spec.max_models}"
            )
            besides = " besides the base model" if uses_base else ""
            listed = ", ".join(str(_name(e)) for _, e in others)
            c.add(
                d,
                gpath,
                f"{spec.name} takes {want} model(s){besides}; got {count} ({listed})",
                at_key=True,
                expected=f"{want} model(s){besides}",
                got=str(count),
                code="model-count",
                hint="list the base model under `base_model:`" if uses_base else None,
            )
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


def _check_merge(c: Checker, d: int, doc: dict[str, Any]) -> None:
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
    if spec.base == "required" and not base:
        slices = doc.get("slices") if isinstance(doc.get("slices"), list) else []
        if not slices or not all(isinstance(s, dict) and s.get("base_model") for s in slices):
            c.add(
                d,
                ("merge_method",),
                f"{spec.name} needs a `base_model`",
                code="missing-base",
                hint="add `base_model: <the model the others were fine-tuned from>`",
            )
    if spec.base == "unused" and base:
        c.add(
            d,
            ("base_model",),
            f"{spec.name} does not use `base_model`; it has no effect",
            at_key=True,
            severity="warning",
            code="unused-base",
        )
    base_name = ModelRef.parse(base).name if base else None
    _check_params(c, d, ("parameters",), doc.get("parameters"), spec, model_level=False)
    _check_inputs(c, d, (), doc, spec, base_name, [doc.get("parameters")])
    if isinstance(doc.get("modules"), dict):
        for mname, module in doc["modules"].items():
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
                )


def _merge_refs(doc: dict[str, Any]) -> list[tuple[YamlPath, str]]:
    refs: list[tuple[YamlPath, str]] = []

    def add(path: YamlPath, value: Any) -> None:
        if isinstance(value, str):
            refs.append((path, value))

    add(("base_model",), doc.get("base_model"))
    containers: list[tuple[YamlPath, Any]] = [((), doc)]
    if isinstance(doc.get("modules"), dict):
        containers += [(("modules", k), v) for k, v in doc["modules"].items()]
    for prefix, cont in containers:
        if not isinstance(cont, dict):
            continue
        for i, m in enumerate(cont.get("models") or []):
            if isinstance(m, dict):
                add((*prefix, "models", i, "model"), m.get("model"))
        for i, s in enumerate(cont.get("slices") or []):
            if isinstance(s, dict):
                add((*prefix, "slices", i, "base_model"), s.get("base_model"))
                for j, src in enumerate(s.get("sources") or []):
                    if isinstance(src, dict):
                        add((*prefix, "slices", i, "sources", j, "model"), src.get("model"))
    if doc.get("tokenizer_source") not in ("base", "union"):
        add(("tokenizer_source",), doc.get("tokenizer_source"))
    tok = doc.get("tokenizer")
    if isinstance(tok, dict) and tok.get("source") not in ("base", "union"):
        add(("tokenizer", "source"), tok.get("source"))
    return refs


def _step_refs(block_key: str, name: str, block: dict[str, Any]) -> list[tuple[YamlPath, str]]:
    p: YamlPath = (block_key, name)
    refs: list[tuple[YamlPath, Any]] = []
    if block_key == "train":
        refs.append(((*p, "base"), block.get("base")))
    elif block_key == "apply":
        refs += [((*p, "adapter"), block.get("adapter")), ((*p, "to"), block.get("to"))]
        for i, a in enumerate(block.get("adapters") or []):
            if isinstance(a, dict):
                refs.append(((*p, "adapters", i, "adapter"), a.get("adapter")))
    else:
        refs += [((*p, "models", i), m) for i, m in enumerate(block.get("models") or [])]
        refs.append(((*p, "reference"), block.get("reference")))
    return [(path, v) for path, v in refs if isinstance(v, str)]


def _check_step(c: Checker, d: int, kind: str, name: str, block: dict[str, Any]) -> None:
    p: YamlPath = (kind, name)
    if kind == "train":
        if ("base" in block) == ("init" in block):
            c.add(
                d,
                p,
                f"train step `{name}` needs exactly one of `base` (a model) or `init` (from scratch)",
                at_key=True,
                code="train-shape",
            )
        method = block.get("method", "lora")
        for key, methods in (
            ("lora", {"lora", "qlora", "dora"}),
            ("quantization", {"qlora"}),
            ("prompt_tuning", {"prompt_tuning"}),
            ("prefix_tuning", {"prefix_tuning"}),
            ("ia3", {"ia3"}),
        ):
            if key in block and isinstance(method, str) and method not in methods:
                c.add(
                    d,
                    (*p, key),
                    f"`{key}` has no effect with method `{method}`",
                    at_key=True,
                    severity="warning",
                    code="unused-setting",
                )
    elif kind == "apply":
        if ("adapter" in block) == ("adapters" in block):
            c.add(
                d,
                p,
                f"apply step `{name}` needs exactly one of `adapter` or `adapters`",
                at_key=True,
                code="apply-shape",
            )
    else:
        data = block.get("data") if isinstance(block.get("data"), dict) else {}
        for gate in block.get("gate") or {}:
            if gate not in data:
                c.add(
                    d,
                    (*p, "gate", gate),
                    f"gate `{gate}` names no dataset of `data`",
                    at_key=True,
                    code="unknown-dataset",
                    hint=did_you_mean(gate, data) or f"datasets: {', '.join(data) or 'none'}",
                )


def _check_ref(
    c: Checker, d: int, path: YamlPath, text: str, graph: nx.DiGraph, owner: str, resolve: bool
) -> None:
    ref = ModelRef.parse(text)
    for part in [ref.name] + ([ref.lora or ""] if "+" in text else []):
        if not part:
            c.add(
                d,
                path,
                f"`{text}` has an empty model or adapter name",
                code="bad-ref",
                hint="write `model+adapter`, both parts non-empty",
            )
            continue
        try:
            kind = classify_name(part, c.step_names, c.recipe_dir)
        except UnknownReference as error:
            c.add(d, path, error.message, hint=error.hint, got=part, code="unknown-ref")
            continue
        if kind == "step":
            graph.add_edge(part, owner, path=(d, path))
        elif kind == "local" and local_path(part, c.recipe_dir) is None:
            c.add(
                d,
                path,
                f"local path `{part}` does not exist",
                code="missing-path",
                hint="paths are relative to the recipe's directory (then the current directory)",
            )
        elif resolve and part == ref.name and kind == "hub":
            if read_model_config(ref, kind, c.recipe_dir) is None:
                c.add(
                    d,
                    path,
                    f"`{part}` is not in the hub cache; its config.json was not checked",
                    severity="warning",
                    code="unresolved",
                    hint=f"`huggingface-cli download {part} config.json` makes it checkable offline",
                )


def _check_resolved(c: Checker, d: int, doc: dict[str, Any]) -> None:
    """--resolve: layer ranges and architectures against each model's config.json."""
    configs: dict[str, tuple[YamlPath, dict[str, Any]]] = {}
    for path, text in _merge_refs(doc):
        ref = ModelRef.parse(text)
        if ref.name in c.step_names:
            continue
        try:
            kind = classify_name(ref.name, c.step_names, c.recipe_dir)
        except UnknownReference:
            continue
        config = read_model_config(ref, kind, c.recipe_dir)
        if config is not None:
            configs.setdefault(ref.name, (path, config))
            layers = config.get("num_hidden_layers")
            lr = _get(c, d, path[:-1]).get("layer_range") if path[-1] == "model" else None
            if (
                isinstance(layers, int)
                and isinstance(lr, list)
                and len(lr) == 2
                and isinstance(lr[1], int)
                and lr[1] > layers
            ):
                c.add(
                    d,
                    (*path[:-1], "layer_range"),
                    f"layer_range ends at {lr[1]} but `{ref.name}` has {layers} layers",
                    expected=f"end <= {layers}",
                    got=str(lr[1]),
                    code="layer-range",
                )
    for key in ("architectures", "hidden_size"):
        seen = {
            name: cfg.get(key) for name, (_, cfg) in configs.items() if cfg.get(key) is not None
        }
        if len({str(v) for v in seen.values()}) > 1:
            c.add(
                d,
                ("merge_method",),
                f"models disagree on {key}: " + ", ".join(f"{n}={v}" for n, v in seen.items()),
                code="incompatible-models",
                hint="mergekit merges only models of one architecture and size (--allow-crimes overrides)",
            )


def check_documents(docs: list[Any], c: Checker, *, resolve: bool = False) -> list[Problem]:
    """Append every semantic problem of `docs` to `c.problems` and return them."""
    global _DOCS
    _DOCS = docs
    seen: dict[str, tuple[int, YamlPath]] = {}
    owners: list[tuple[int, str, list[tuple[YamlPath, str]]]] = []
    for d, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        named: list[tuple[str, YamlPath]] = []
        for kind in ("train", "apply", "eval"):
            if isinstance(doc.get(kind), dict):
                named += [(n, (kind, n)) for n in doc[kind]]
        if is_merge_document(doc):
            named.append((stage_name(doc), ("name",) if "name" in doc else ()))
        for name, path in named:
            if name in seen:
                first = c.positions[seen[name][0]].key_at(seen[name][1])[0]
                c.add(
                    d,
                    path,
                    f"step name `{name}` is used twice (first on line {first})",
                    at_key=True,
                    code="duplicate-step",
                    hint="give every step and merge stage its own `name`" if not path else None,
                )
            else:
                seen[name] = (d, path)
    c.step_names = set(seen)
    graph = nx.DiGraph()
    for d, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        if is_merge_document(doc):
            _check_merge(c, d, doc)
            owners.append((d, stage_name(doc), _merge_refs(doc)))
            if resolve:
                _check_resolved(c, d, doc)
        for kind in ("train", "apply", "eval"):
            for name, block in (
                (doc.get(kind) or {}).items() if isinstance(doc.get(kind), dict) else ()
            ):
                if isinstance(block, dict):
                    _check_step(c, d, kind, name, block)
                    owners.append((d, name, _step_refs(kind, name, block)))
    for d, owner, refs in owners:
        for path, text in refs:
            _check_ref(c, d, path, text, graph, owner, resolve)
    for cycle in find_cycles(graph):
        d, path = graph.edges[cycle[-1], cycle[0]]["path"]
        c.add(
            d,
            path,
            f"steps depend on each other in a cycle: {describe_cycle(cycle)}",
            code="cycle",
            hint="a step cannot use its own output, directly or through other steps",
        )
    return c.problems
