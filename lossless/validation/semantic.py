"""Checks the schema cannot express: method rules, parameter ranges, references, cycles.

Runs on every document even when the schema pass found errors, so one run reports everything; each
check therefore looks at types defensively and skips what it cannot read. The method rules come
only from `lossless.methods.table.METHODS` (model counts, base, parameter specs): adding a method
there is enough for validation to know it.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from lossless.errors import Problem, YamlPath
from lossless.merge.chat_templates import BUILTIN_TEMPLATES, is_jinja
from lossless.recipe.graph import describe_cycle, find_cycles
from lossless.recipe.inputs import (
    STEP_SECTIONS,
    Input,
    is_merge_document,
    stage_name,
    step_blocks,
    walk_inputs,
)
from lossless.recipe.model import ModelRef
from lossless.recipe.references import (
    UnknownReference,
    classify_name,
    did_you_mean,
    local_path,
    read_model_config,
)
from lossless.validation.checker import Checker
from lossless.validation.data_rules import check_eval_data, check_train_data
from lossless.validation.eval_rules import check_eval
from lossless.validation.inputs_check import check_inputs, local_locator
from lossless.validation.merge_rules import check_merge
from lossless.validation.push_rules import check_pushes
from lossless.validation.search_rules import check_search


def _check_generate(c: Checker, d: int, name: str, block: dict[str, Any]) -> None:
    p: YamlPath = ("generate", name)
    prompts = block.get("prompts")
    if prompts is None and "samples" not in block:
        c.add(
            d,
            p,
            f"generate step `{name}` samples its own user turns (no `prompts`): say how many rows",
            at_key=True,
            code="generate-shape",
            hint="add `samples: 200` (or `prompts: file.jsonl` to answer given prompts)",
        )
    if (
        isinstance(prompts, str)
        and prompts not in c.step_names
        and local_path(prompts, c.recipe_dir) is None
    ):
        c.add(
            d,
            (*p, "prompts"),
            f"prompts file `{prompts}` does not exist",
            code="missing-path",
            hint="paths are relative to the recipe's directory (then the current directory)",
        )
    length = block.get("length")
    if isinstance(length, dict):
        low, high = length.get("min_chars", 1), length.get("max_chars")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            c.add(
                d,
                (*p, "length", "max_chars"),
                f"max_chars {high} is below min_chars {low}: no row could be kept",
                expected=f">= {low}",
                got=str(high),
                code="out-of-range",
            )
    check_chat_template(c, d, p, block)


def check_chat_template(c: Checker, d: int, p: YamlPath, block: Any, auto: bool = False) -> None:
    """`chat_template:` is a built-in name, a Jinja string, or (a merge's) `auto`."""
    template = block.get("chat_template") if isinstance(block, dict) else None
    names = [*BUILTIN_TEMPLATES, *(["auto"] if auto else [])]
    if isinstance(template, str) and not is_jinja(template) and template not in names:
        c.add(
            d,
            (*p, "chat_template"),
            f"unknown chat_template `{template}`",
            expected=", ".join(names) + ", or a Jinja template",
            got=template,
            code="unknown-value",
            hint=did_you_mean(template, names),
        )


def _check_data_step(c: Checker, item: Input, graph: nx.DiGraph) -> None:
    """A data value naming a step reads a `generate:` step's rows; no other step makes data."""
    d, path = int(item.path[0]), item.path[1:]
    for name in item.steps_read(c.step_names):
        if name in c.data_steps:
            graph.add_edge(name, item.owner, path=(d, path))
        else:
            c.add(
                d,
                path,
                f"`{name}` is a step that makes a model, not data",
                code="not-data",
                hint="name a `generate:` step, or a data file",
            )


def _check_trainer_mapping(c: Checker, d: int, p: YamlPath, trainer: Any) -> None:
    """`trainer:` keys against the installed SFTConfig's fields (a data file: no torch)."""
    from lossless.training.trainer_options import field_problem

    if not isinstance(trainer, dict):
        return
    for key in trainer:
        problem = field_problem(str(key))
        if problem is not None:
            message, hint = problem
            c.add(d, (*p, "trainer", key), message, at_key=True, hint=hint, code="trainer-field")


def _check_distributed(c: Checker, d: int, p: YamlPath, block: dict[str, Any]) -> None:
    """`fsdp:` / `fsdp_config:` against what transformers reads; FSDP or DeepSpeed, not both."""
    from lossless.training.distributed import fsdp_options, fsdp_problems

    config = block.get("fsdp_config", {})
    fsdp = block.get("fsdp")
    if not isinstance(config, dict) or not isinstance(fsdp, bool | str | list | None):
        return  # the schema pass reports the shape
    for where, message, hint, at_key in fsdp_problems(fsdp_options(fsdp), config):
        path = (*p, *(where or ("fsdp",)))
        if where == ("fsdp_config",):  # harmless, like `lora:` on a full fine-tune
            c.add(d, path, message, at_key=True, severity="warning", code="unused-setting")
        else:
            c.add(d, path, message, at_key=at_key, hint=hint, code="fsdp-setting")
    if fsdp not in (None, False) and "deepspeed" in block:
        c.add(
            d,
            (*p, "deepspeed"),
            "a train step shards its model with FSDP or with DeepSpeed, not both",
            at_key=True,
            hint="keep `fsdp:` or `deepspeed:`",
            code="fsdp-setting",
        )


def _check_step(c: Checker, d: int, kind: str, name: str, block: dict[str, Any]) -> None:
    p: YamlPath = (kind, name)
    if kind == "generate":
        _check_generate(c, d, name, block)
    elif kind == "train":
        check_chat_template(c, d, p, block)
        if ("base" in block) == ("init" in block):
            c.add(
                d,
                p,
                f"train step `{name}` needs exactly one of `base` (a model) or `init` (from scratch)",
                at_key=True,
                code="train-shape",
            )
        _check_trainer_mapping(c, d, p, block.get("trainer"))
        _check_distributed(c, d, p, block)
        check_train_data(c, d, p, block)
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
        check_chat_template(c, d, p, block)
        check_eval_data(c, d, p, block)
        check_eval(c, d, p, block)


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
        if kind == "step" and part in c.data_steps:
            c.add(
                d,
                path,
                f"`{part}` is a generate step: it makes data, not a model",
                code="not-a-model",
                hint=f"read its rows as data (e.g. `replay: {{data: {part}}}`), or name a model",
            )
        elif kind == "step":
            graph.add_edge(part, owner, path=(d, path))
        elif kind == "local" and local_path(part, c.recipe_dir) is None:
            c.add(
                d,
                path,
                f"local path `{part}` does not exist",
                code="missing-path",
                hint="paths are relative to the recipe's directory (then the current directory)",
            )
        elif (
            resolve
            and part == ref.name
            and kind == "hub"
            and read_model_config(ref, kind, c.recipe_dir) is None
        ):
            c.add(
                d,
                path,
                f"`{part}` is not in the hub cache; its config.json was not checked",
                severity="warning",
                code="unresolved",
                hint=f"`hf download {part} config.json` makes it checkable offline",
            )


def check_documents(docs: list[Any], c: Checker, *, resolve: bool = False) -> list[Problem]:
    """Append every semantic problem of `docs` to `c.problems` and return them."""
    c.docs = docs
    seen: dict[str, tuple[int, YamlPath]] = {}
    for d, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        named: list[tuple[str, YamlPath]] = []
        for kind in STEP_SECTIONS:
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
    c.data_steps = {name for name, (_, path) in seen.items() if path[:1] == ("generate",)}
    inputs = walk_inputs(docs)
    for d, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        if is_merge_document(doc):
            check_merge(c, d, doc)
            check_search(c, d, doc)
            check_chat_template(c, d, (), doc, auto=True)
        for kind in STEP_SECTIONS:
            for name, block in step_blocks(doc, kind):
                _check_step(c, d, kind, name, dict(block))
    check_pushes(c, docs)
    check_inputs(
        c, inputs, local_locator(c.recipe_dir, c.step_names, resolve), allow_crimes=c.allow_crimes
    )
    graph = nx.DiGraph()
    for item in inputs:
        if item.kind == "model":
            _check_ref(c, int(item.path[0]), item.path[1:], item.value, graph, item.owner, resolve)
        else:
            _check_data_step(c, item, graph)
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
