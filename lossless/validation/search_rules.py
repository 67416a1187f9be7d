"""Checks of a merge stage's `search:` block that the schema cannot express.

The eval step it names exists, and its reference is not the stage being searched; the objective
and constraint datasets are in that eval's `data`; every `vary` key is a path that exists in the
stage config; ranges are ranges; a grid fits its trial budget; and each varied value, put into
the config, is valid as if written there. A problem that a substituted value causes is reported
at its `vary` key, so `weight: {low: -1, ...}` on a method whose weight must be >= 0 points at
the line the user wrote.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from lossless.errors import YamlPath
from lossless.methods.table import METHODS
from lossless.recipe.build import LOSSLESS_KEYS, build_dimension
from lossless.recipe.inputs import stage_name, step_blocks
from lossless.recipe.model import ModelRef
from lossless.recipe.references import did_you_mean
from lossless.search.space import BadPath, grid_size, lookup, parse_path, substitute
from lossless.validation.checker import Checker
from lossless.validation.merge_rules import check_merge

S: YamlPath = ("search",)


def _eval_blocks(c: Checker) -> dict[str, dict[str, Any]]:
    return {
        name: dict(block)
        for doc in c.docs
        if isinstance(doc, dict)
        for name, block in step_blocks(doc, "eval")
    }


def check_search(c: Checker, d: int, doc: dict[str, Any]) -> None:
    search = doc.get("search")
    if not isinstance(search, dict):
        return
    evals = _eval_blocks(c)
    name = search.get("eval")
    block = evals.get(name) if isinstance(name, str) else None
    if isinstance(name, str) and block is None:
        c.add(
            d,
            (*S, "eval"),
            f"`{name}` is not an eval step of this recipe",
            code="unknown-ref",
            hint=did_you_mean(name, evals) or f"eval steps: {', '.join(evals) or 'none'}",
        )
    if block is not None:
        _check_eval_use(c, d, doc, search, block)
    _check_vary(c, d, doc, search)


def _check_eval_use(
    c: Checker, d: int, doc: dict[str, Any], search: dict[str, Any], block: dict[str, Any]
) -> None:
    stage = stage_name(doc)
    models = block.get("models") if isinstance(block.get("models"), list) else []
    reference = block.get("reference", models[0] if models else None)
    if isinstance(reference, str) and ModelRef.parse(reference).name == stage:
        c.add(
            d,
            (*S, "eval"),
            f"the search measures trials against eval `{search['eval']}`'s reference, "
            f"which is this stage `{stage}` itself",
            code="search-reference",
            hint="give that eval step a `reference:` (e.g. the instruct model before merging)",
        )
    data: dict[str, Any] = block["data"] if isinstance(block.get("data"), dict) else {}
    metrics = block.get("metrics") if isinstance(block.get("metrics"), list) else None
    objective = search.get("objective")
    named: list[tuple[YamlPath, Any, Any]] = []
    if isinstance(objective, dict):
        named.append(((*S, "objective", "dataset"), objective.get("dataset"), objective))
    constraints = search.get("constraints")
    if isinstance(constraints, dict):
        named += [((*S, "constraints", k), k, v) for k, v in constraints.items()]
    for path, dataset, spec in named:
        if isinstance(dataset, str) and dataset not in data:
            c.add(
                d,
                path,
                f"`{dataset}` is not a dataset of eval `{search['eval']}`",
                at_key=path[-1] != "dataset",
                code="unknown-dataset",
                hint=did_you_mean(dataset, data) or f"datasets: {', '.join(data) or 'none'}",
            )
        metric = spec.get("metric") if isinstance(spec, dict) else None
        if metrics is not None and isinstance(metric, str) and metric not in metrics:
            c.add(
                d,
                path,
                f"metric `{metric}` is not measured by eval `{search['eval']}`",
                at_key=path[-1] != "dataset",
                code="unmeasured-metric",
                hint=f"add it to that step's `metrics:` (measured: {', '.join(map(str, metrics))})",
            )


def _check_vary(c: Checker, d: int, doc: dict[str, Any], search: dict[str, Any]) -> None:
    vary = search.get("vary")
    if not isinstance(vary, dict):
        return
    config = {k: v for k, v in doc.items() if k not in LOSSLESS_KEYS}
    dims_ok = True
    for key, spec in vary.items():
        where = (*S, "vary", key)
        try:
            keys = parse_path(str(key))
        except BadPath:
            c.add(
                d,
                where,
                f"`{key}` is not a config path",
                at_key=True,
                code="bad-path",
                hint="write a path like `models[0].parameters.weight` or `parameters.lambda`",
            )
            dims_ok = False
            continue
        if not lookup(config, keys)[0]:
            c.add(
                d,
                where,
                f"`{key}` is not set in this stage's config",
                at_key=True,
                code="bad-path",
                hint="vary only values the config sets: write it there with a starting value",
            )
            dims_ok = False
            continue
        if not isinstance(spec, dict):
            continue
        if not _check_range(c, d, where, spec, search.get("sampler", "grid")):
            dims_ok = False
            continue
        values = spec["choices"] if isinstance(spec.get("choices"), list) else None
        if values is None and isinstance(spec.get("low"), int | float):
            values = [spec["low"], spec["high"]]  # a range is checked at both of its ends
        if keys == ("merge_method",):
            for choice in values or []:
                if choice not in METHODS:
                    c.add(
                        d,
                        where,
                        f"`{choice}` is not a merge method",
                        at_key=True,
                        code="unknown-value",
                        hint=did_you_mean(str(choice), METHODS),
                    )
                    values = None
        _check_substituted(c, d, doc, str(key), keys, values or [])
    if dims_ok:
        _check_budget(c, d, search)


def _check_range(c: Checker, d: int, where: YamlPath, spec: dict[str, Any], sampler: Any) -> bool:
    low, high = spec.get("low"), spec.get("high")
    if not (isinstance(low, int | float) and isinstance(high, int | float)):
        return True  # choices, or a shape the schema reported
    problems = []
    if low >= high:
        problems.append((f"range [{low}, {high}] is empty", "low must be less than high"))
    if spec.get("log") and low <= 0:
        problems.append(("`log: true` needs low > 0", "use a positive low, or drop `log`"))
    if spec.get("log") and spec.get("step") is not None:
        problems.append(("`log` and `step` cannot both be set", "keep one of them"))
    if sampler == "grid" and spec.get("step") is None:
        problems.append(
            ("a grid needs `step` on a range", "add e.g. `step: 0.1`, or use `choices`")
        )
    for message, hint in problems:
        c.add(d, where, message, at_key=True, code="search-range", hint=hint)
    return not problems


def _check_substituted(
    c: Checker,
    d: int,
    doc: dict[str, Any],
    key: str,
    keys: tuple[str | int, ...],
    values: list[Any],
) -> None:
    """Each value put into the config and checked as the merge rules check a file."""

    def problems_of(candidate: dict[str, Any]) -> list[Any]:
        scratch = Checker(c.file, c.lines, c.positions, c.recipe_dir, step_names=c.step_names)
        scratch.docs = [candidate if i == d else x for i, x in enumerate(c.docs)]
        check_merge(scratch, d, candidate)
        return scratch.problems

    written = {(p.path, p.message) for p in problems_of(doc)}
    reported: set[str] = set()
    for value in values:
        for p in problems_of(substitute(doc, {keys: value})):
            if (p.path, p.message) in written or p.message in reported:
                continue
            reported.add(p.message)
            c.add(
                d,
                (*S, "vary", key),
                f"with {key} = {value!r}: {p.message}",
                at_key=True,
                severity=p.severity,
                expected=p.expected,
                got=p.got,
                hint=p.hint,
                code=p.code,
            )


def _check_budget(c: Checker, d: int, search: dict[str, Any]) -> None:
    sampler = search.get("sampler", "grid")
    trials = search.get("trials")
    if sampler != "grid":
        if trials is None:
            c.add(
                d,
                S,
                f"sampler `{sampler}` needs a trial budget",
                at_key=True,
                code="missing-key",
                hint="add e.g. `trials: 20`",
            )
        if sampler == "optuna" and importlib.util.find_spec("optuna") is None:
            c.add(
                d,
                (*S, "sampler"),
                "sampler `optuna` needs the optuna package, which is not installed",
                severity="warning",
                code="missing-extra",
                hint="pip install 'lossless[search]'",
            )
        return
    try:
        dims = [
            build_dimension(str(k), v) for k, v in search["vary"].items() if isinstance(v, dict)
        ]
        size = grid_size(dims)
    except (ValueError, TypeError, KeyError):
        return
    if isinstance(trials, int) and trials < size:
        c.add(
            d,
            (*S, "trials"),
            f"the grid has {size} points but `trials` is {trials}",
            code="search-budget",
            hint=f"raise trials to {size}, coarsen a `step`, or use sampler: random | optuna",
        )
    elif isinstance(trials, int) and trials > size:
        c.add(
            d,
            (*S, "trials"),
            f"the grid has only {size} points: {size} trials will run, not {trials}",
            severity="warning",
            code="search-budget",
        )
