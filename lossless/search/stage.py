"""A merge stage with `search:`: each trial a cached merge + eval, the best merge the output.

    <work>/<stage>.search/
      reference-<key>.json     the reference model's scores (measured once per input version)
      <trial key>/trial.json   a trial's config and scores, written last (its cache entry)
      <trial key>/model/       the best trial's merge so far (every other one deleted after eval)
      trials.json, trials.csv, tradeoff.png   the latest table, kept even when the search fails

A trial's key is a digest of its config, of what the eval measures with (data, settings) and of
every input's identity (the stage fingerprint's parts except the stage's own settings), so a
rerun re-measures nothing, and raising `trials` or tightening a constraint re-measures only
what is new. The output (`ctx.out_dir`) gets the best merge, `search/` with the tables, the
plot and `best.yaml`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.engine.context import default_work_dir
from lossless.engine.fingerprint import digest
from lossless.errors import LosslessError
from lossless.recipe.build import build_merge
from lossless.recipe.inputs import is_merge_document, stage_name
from lossless.recipe.model import MergeSearch, MergeStep
from lossless.search import report
from lossless.search.judge import Judgement, better, judge, maximizes, objective_metric
from lossless.search.loop import Trial, best_trial, run_trials
from lossless.search.samplers import make_sampler
from lossless.search.space import point_values, substitute, trial_budget

if TYPE_CHECKING:
    from lossless.engine.context import StepContext
    from lossless.steps.eval import EvalInputs


class SearchFailed(LosslessError):
    """No trial met every constraint (exit 1), after the table was written."""


def search_root(step: MergeStep, ctx: StepContext) -> Path:
    work = ctx.work_dir or default_work_dir(ctx.recipe.path)
    return Path(work) / f"{step.name}.search"


def _check_measurable(search: MergeSearch, inputs: EvalInputs) -> None:
    """Objective and constraint metrics are measured, and exact_match only on QA-shaped data."""
    from lossless.evaluation.gates import default_metric
    from lossless.evaluation.metrics import EXACT_MATCH_FORMATS

    wanted = [("objective", search.objective.dataset, search.objective.metric)]
    wanted += [(f"constraints.{d}", d, g.get("metric")) for d, g in search.constraints.items()]
    for where, dataset, metric in wanted:
        info = inputs.datasets.get(dataset)
        if info is None:
            raise LosslessError(f"search.{where}: no dataset {dataset!r} in eval {search.eval!r}")
        metric = str(metric or default_metric(info.format))
        if metric not in inputs.metrics:
            raise LosslessError(
                f"search.{where}: metric {metric!r} is not measured by eval {search.eval!r}",
                hint=f"add it to that step's `metrics:` (measured: {', '.join(inputs.metrics)})",
            )
        if metric == "exact_match" and info.format not in EXACT_MATCH_FORMATS:
            raise LosslessError(
                f"search.{where}: exact_match needs prompts and answers, but {dataset!r} is "
                f"{info.format} data",
                hint="use `metric: loss` instead",
            )


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in point.items())


def run_search(step: MergeStep, ctx: StepContext) -> dict[str, str]:
    from lossless.steps import eval as eval_step
    from lossless.steps import merge as merge_step

    search = step.search
    assert search is not None
    from lossless.engine.hub_data import located_hub_errors, with_pinned_datasets

    measure = with_pinned_datasets(search.measure, ctx.recipe, ctx.resolver.dataset_commit)
    assert measure.reference is not None
    quiet = ctx.options.quiet
    root = search_root(step, ctx)
    with located_hub_errors(ctx.recipe, measure.name):
        inputs = eval_step.prepare_inputs(measure, ctx.recipe_dir, quiet=quiet)
    _check_measurable(search, inputs)
    formats = {name: info.format for name, info in inputs.datasets.items()}

    # What the numbers depend on besides the trial's config: every input's identity (not the
    # stage's own settings, which hold the search block itself) and how the eval measures.
    parts = {k: v for k, v in ctx.fingerprint_parts.items() if k != "settings"}
    parts = parts or {"stage": ctx.fingerprint}
    measured_with = digest({"data": measure.data, "settings": measure.settings})
    reference = str(measure.reference)
    reference_id = parts.get(f"step:{reference}") or parts.get(f"model:{reference}") or parts
    data_ids = {k: v for k, v in parts.items() if k.startswith("data:")}
    ref_key = digest({"reference": reference_id, "data": data_ids, "eval": measured_with})
    ref_path = root / f"reference-{ref_key[:16]}.json"
    if ref_path.is_file():
        reference_scores = json.loads(ref_path.read_text())["scores"]
    else:
        ref_dir = ctx.resolver.model_dir(measure.reference)
        reference_scores = eval_step.score_model(measure, inputs, ref_dir, reference, quiet=quiet)
        _write_json(ref_path, {"model": reference, "scores": reference_scores})

    scores_of: dict[int, Any] = {}
    hashes_of: dict[str, dict[str, str]] = {}
    kept: list[tuple[Judgement, Path]] = []  # the best trial so far whose merge is on disk
    total = trial_budget(search)

    def evaluate(number: int, point: dict[str, Any]) -> Trial:
        config = substitute(step.config, point_values(search.vary, point))
        key = digest({"config": config, "inputs": parts, "eval": measured_with})
        trial_dir = root / key[:16]
        record = trial_dir / "trial.json"
        cached = record.is_file()
        if cached:
            scores = json.loads(record.read_text())["scores"]
        else:
            model_dir, partial = trial_dir / "model", trial_dir / "model.partial"
            if model_dir.exists():  # merged, then stopped before its eval finished
                shutil.rmtree(model_dir)
            partial.mkdir(parents=True, exist_ok=True)  # a merge resumes at its first missing shard
            trial_step = build_merge({**config, "name": step.name})
            hashes_of[key] = dict(merge_step.run(trial_step, replace(ctx, out_dir=partial)) or {})
            partial.rename(model_dir)
            scores = eval_step.score_model(
                measure, inputs, model_dir, f"trial {number}", quiet=quiet
            )
            _write_json(record, {"key": key, "point": point, "config": config, "scores": scores})
        scores_of[number] = scores
        judgement = judge(
            scores,
            objective=search.objective,
            constraints=search.constraints,
            reference=reference,
            reference_scores=reference_scores,
            formats=formats,
        )
        _keep_if_best(judgement, trial_dir / "model", kept)
        _say(ctx, number, total, point, judgement, cached)
        return Trial(number, point, judgement, key=key, cached=cached)

    sampler = make_sampler(search.sampler, search.vary, search.seed)
    trials = run_trials(sampler, total, evaluate)
    best = best_trial(trials)
    metric = objective_metric(search.objective, formats)
    data = report.payload(
        step.name,
        search,
        trials,
        best,
        objective_metric=metric,
        maximize=maximizes(search.objective, formats),
        reference_scores=reference_scores,
        scores=scores_of,
    )
    _, csv_path = report.write_tables(root, data)
    report.write_tradeoff(root / "tradeoff.png", data)
    if best is None or not best.judgement.feasible:
        for _, model_dir in kept:
            shutil.rmtree(model_dir, ignore_errors=True)
        raise _infeasible(step, trials, best, csv_path)

    known = _place_best(step, ctx, best, root, hashes_of)
    out = ctx.out_dir / "search"
    report.write_tables(out, data)
    _, note = report.write_tradeoff(out / "tradeoff.png", data)
    if note and not quiet:
        _console().print(f"[yellow]{note}[/yellow]")
    _write_best_recipe(step, ctx, best, len(trials), metric, out / "best.yaml")
    return known


def _keep_if_best(
    judgement: Judgement, model_dir: Path, kept: list[tuple[Judgement, Path]]
) -> None:
    """Keep the merge of the best trial so far on disk; delete every other one."""
    current = kept[0] if kept else None
    if not model_dir.is_dir():
        return
    if current is None or (current[1] != model_dir and better(judgement, current[0])):
        if current is not None:
            shutil.rmtree(current[1], ignore_errors=True)
        kept[:] = [(judgement, model_dir)]
    elif current[1] != model_dir:
        shutil.rmtree(model_dir, ignore_errors=True)


def _place_best(
    step: MergeStep, ctx: StepContext, best: Trial, root: Path, hashes: dict[str, dict[str, str]]
) -> dict[str, str]:
    """The best trial's merge into the output: moved from its trial dir, or merged again when an
    earlier run already moved it out (a merge is deterministic: the same config, the same bytes)."""
    from lossless.steps import merge as merge_step

    model_dir = root / best.key[:16] / "model"
    if not model_dir.is_dir():
        config = substitute(step.config, point_values(step.search.vary, best.point))  # type: ignore[union-attr]
        return dict(merge_step.run(build_merge({**config, "name": step.name}), ctx) or {})
    for entry in model_dir.iterdir():
        dest = ctx.out_dir / entry.name
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        shutil.move(str(entry), dest)
    model_dir.rmdir()
    return hashes.get(best.key, {})


def _write_best_recipe(
    step: MergeStep, ctx: StepContext, best: Trial, count: int, metric: str, path: Path
) -> None:
    search = step.search
    assert search is not None
    documents = ctx.recipe.documents
    index = next(
        i for i, d in enumerate(documents) if is_merge_document(d) and stage_name(d) == step.name
    )
    # No `search:`, and no `output:`: run as its own recipe it must not replace this one's output.
    document = {k: v for k, v in documents[index].items() if k not in ("search", "output")}
    document = substitute(document, point_values(search.vary, best.point))
    stem = Path(ctx.recipe.path).stem
    header = [
        f"The best point of merge search `{step.name}` in {Path(ctx.recipe.path).name}: trial "
        f"{best.number} of {count}, {search.objective.dataset} {metric} = "
        f"{best.judgement.objective:.6g}.",
        "The recipe as written, with that stage's searched values set, no `search:` and no",
        "`output:` (give it one of its own, or pass OUT to `lossless run`).",
        "Its paths are relative to the recipe's directory: copy it there to use it,",
        f"  cp {ctx.target / 'search' / path.name} {ctx.recipe_dir / (stem + '.best.yaml')}",
    ]
    text = report.best_recipe_text(documents, index, document, header=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _infeasible(
    step: MergeStep, trials: list[Trial], closest: Trial | None, table: Path
) -> SearchFailed:
    if closest is None:
        return SearchFailed(f"merge search {step.name!r}: no trial ran")
    lines = "\n".join(f"  - {b}" for b in closest.judgement.breaches)
    return SearchFailed(
        f"merge search {step.name!r}: none of {len(trials)} trial(s) met every constraint; the "
        f"closest, trial {closest.number} ({_describe(closest.point)}), breaks:\n{lines}",
        hint=f"every trial is in {table}; relax `constraints`, widen `vary` or raise `trials`",
    )


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _say(
    ctx: StepContext,
    number: int,
    total: int,
    point: dict[str, Any],
    j: Judgement,
    cached: bool,
) -> None:
    if ctx.options.quiet:
        return
    margin = "" if not j.margins else f", worst margin {j.worst_margin:+.4f}"
    status = "feasible" if j.feasible else "infeasible"
    note = ", cached" if cached else ""
    _console().print(
        f"  trial {number}/{total} {_describe(point)}: objective {j.objective:.4f}{margin} "
        f"({status}{note})",
        soft_wrap=True,
    )
