"""The `eval:` step: score every model on every held-out dataset and lm-eval task, report, gate.

    eval:
      forgetting:
        models: [Qwen/Qwen2-7B-Instruct, merged]     # the first one is the reference by default
        data: {general: data/general.jsonl, new_skill: {path: data/new.jsonl, role: new}}
        tasks: [arc_easy, {name: hellaswag, num_fewshot: 10}]   # needs `pip install lm-eval`
        gate: {general: {max_regression: 0.02}, arc_easy: {metric: acc, max_regression: 0.05}}

Writes `eval.json` (every number) and `eval.png` (retention % with the gate lines) into
`out_dir`, prints a table, then raises GateFailed if any gate was breached, after the reports
exist, so CI can show them. Each model is loaded once for its datasets and its tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import GateFailed, LosslessError
from lossless.evaluation.eval_data import eval_metrics, load_eval_datasets, precheck_gates
from lossless.evaluation.gates import Breach, check_gates
from lossless.evaluation.skills import SkillInfo, saved_skills
from lossless.recipe.model import EvalStep

if TYPE_CHECKING:
    from lossless.engine.context import StepContext
    from lossless.evaluation.harness import HarnessSettings
    from lossless.evaluation.task_results import TaskScore

DEFAULT_BATCH_SIZE = 8
MAX_EVAL_LEN = 4096  # tokens per example; the model's max_position_embeddings if smaller


@dataclass(frozen=True)
class EvalResult:
    """What an eval step measured; `scores` is model → skill (dataset or task) → metric → value."""

    step: str
    scores: dict[str, dict[str, dict[str, float]]]
    reference: str | None
    datasets: dict[str, SkillInfo]  # every skill: the datasets, then the tasks
    breaches: tuple[Breach, ...]
    json_path: Path
    chart_path: Path | None
    lm_eval: dict[str, dict[str, Any]]  # model → lm-eval's own output (results, configs, ...)


def run(step: EvalStep, ctx: StepContext) -> None:
    """The runner's entry: every model's directory, then `run_eval` into `ctx.out_dir`."""
    from lossless.engine.hub_data import located_hub_errors, with_pinned_datasets
    from lossless.engine.resolver import with_data_files

    step = with_data_files(step, ctx.resolver)  # `generate:` step names → their data.jsonl
    step = with_pinned_datasets(step, ctx.recipe, ctx.resolver.dataset_commit)  # hub: a commit
    refs = [*step.models, *([step.reference] if step.reference else [])]
    model_dirs = {str(ref): ctx.resolver.model_dir(ref) for ref in refs}
    try:
        with located_hub_errors(ctx.recipe, step.name):
            run_eval(
                step,
                model_dirs=model_dirs,
                out_dir=ctx.out_dir,
                recipe_dir=ctx.recipe_dir,
                quiet=ctx.options.quiet,
                trust_remote_code=ctx.options.trust_remote_code,
            )
    except GateFailed as failed:  # point at where the numbers will live once published
        raise GateFailed(
            failed.message, hint=f"every number is in {ctx.target / 'eval.json'}"
        ) from None


def run_eval(
    step: EvalStep,
    *,
    model_dirs: Mapping[str, Path],
    out_dir: Path,
    recipe_dir: Path,
    quiet: bool = False,
    trust_remote_code: bool = False,
) -> EvalResult:
    """Measure, report, gate. Raises GateFailed (exit 1) listing every breach."""
    from rich.console import Console

    from lossless.evaluation import report
    from lossless.evaluation.chart import chart_data, write_chart

    metrics = eval_metrics(step)
    reference = str(step.reference) if step.reference else str(step.models[0])
    # The reference is measured too, first, even when it is not in `models:`.
    order = [reference] + [str(m) for m in step.models if str(m) != reference]
    missing = [m for m in order if m not in model_dirs]
    if missing:
        raise LosslessError(f"eval {step.name!r}: no model directory for {', '.join(missing)}")
    harness, manager = _prepare_tasks(step, recipe_dir, trust_remote_code, quiet)  # first
    datasets, rows = load_eval_datasets(step, recipe_dir, quiet)
    precheck_gates(step, datasets, metrics, harness)

    scores: dict[str, dict[str, dict[str, float]]] = {}
    task_rows: dict[str, dict[str, TaskScore]] = {}
    lm_eval: dict[str, dict[str, Any]] = {}
    for model_name in order:
        model, tokenizer = _load_model(step, Path(model_dirs[model_name]), model_name)
        scores[model_name] = _score_datasets(
            step, model, tokenizer, model_name, datasets, rows, metrics, quiet
        )
        if harness is not None:
            from lossless.evaluation.harness import run_tasks, write_samples
            from lossless.evaluation.task_results import task_scores, task_skills

            output = run_tasks(model, tokenizer, harness, manager, label=model_name, quiet=quiet)
            if harness.log_samples:
                write_samples(out_dir / "samples", model_name, output.pop("samples", {}))
            lm_eval[model_name] = output
            task_rows[model_name] = task_scores(output, [t.name for t in harness.tasks])
            scores[model_name].update({n: row.scores for n, row in task_rows[model_name].items()})
        del model, tokenizer  # before the next model is loaded
        _empty_cache()

    skills = dict(datasets)
    if harness is not None:
        roles = {t.name: t.role for t in harness.tasks}
        skills.update(task_skills(task_rows.get(reference, {}), roles))
    try:
        breaches, gate_error = (
            check_gates(step.gate, scores, reference=reference, skills=skills),
            None,
        )
    except LosslessError as error:  # a task metric lm-eval did not report: known only now
        breaches, gate_error = [], error
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"eval {step.name} (reference: {reference})"
    payload = report.eval_payload(
        step.name,
        scores,
        reference,
        skills,
        breaches,
        lm_eval,
        gate_error.message if gate_error else None,
    )
    json_path = report.write_json(out_dir / "eval.json", payload)
    data = chart_data(scores, reference, skills, step.gate, breaches)
    chart_path, chart_note = write_chart(out_dir / "eval.png", data, title)
    if not quiet:  # the numbers are in eval.json either way
        Console().print(report.render_table(scores, reference, skills, title, step.gate, breaches))
    if chart_note:
        Console(stderr=True).print(f"[yellow]{chart_note}[/yellow]")
    if gate_error is not None:
        raise gate_error
    _raise_for_breaches(step, breaches, json_path)
    return EvalResult(
        step=step.name,
        scores=scores,
        reference=reference,
        datasets=skills,
        breaches=tuple(breaches),
        json_path=json_path,
        chart_path=chart_path,
        lm_eval=lm_eval,
    )


def _prepare_tasks(
    step: EvalStep, recipe_dir: Path, trust_remote_code: bool, quiet: bool
) -> tuple[HarnessSettings | None, Any]:
    """The step's task settings and lm-eval's task index, or (None, None) without `tasks:`."""
    if not step.settings.get("tasks"):
        return None, None
    from lossless.evaluation.harness import harness_settings, require_lm_eval, task_manager

    require_lm_eval()  # fail before hours of scoring, not after
    harness = harness_settings(
        step.name, step.settings, recipe_dir, trust_remote_code=trust_remote_code
    )
    return harness, task_manager(step.name, harness, quiet=quiet)


@dataclass(frozen=True)
class EvalInputs:
    """An eval step's datasets read once, for scoring many models one at a time (merge search)."""

    datasets: dict[str, SkillInfo]
    rows: dict[str, list[dict[str, Any]]]
    metrics: tuple[str, ...]


def prepare_inputs(step: EvalStep, recipe_dir: Path, *, quiet: bool = False) -> EvalInputs:
    """Read and check the step's data (and its gates against it) before any model is loaded."""
    metrics = eval_metrics(step)
    datasets, rows = load_eval_datasets(step, recipe_dir, quiet)
    precheck_gates(step, datasets, metrics, None)
    return EvalInputs(datasets, rows, metrics)


def score_model(
    step: EvalStep, inputs: EvalInputs, model_dir: Path, model_name: str, *, quiet: bool = False
) -> dict[str, dict[str, float]]:
    """One model's dataset scores, dataset → metric → value, exactly as `run_eval` computes them."""
    model, tokenizer = _load_model(step, model_dir, model_name)
    try:
        return _score_datasets(
            step, model, tokenizer, model_name, inputs.datasets, inputs.rows, inputs.metrics, quiet
        )
    finally:
        del model
        _empty_cache()


def check_saved_gates(step: EvalStep, out_dir: Path) -> None:
    """Re-apply the gates to a fresh (cached) eval's `eval.json`: a skipped step still fails CI."""
    import json

    json_path = out_dir / "eval.json"
    try:
        saved = json.loads(json_path.read_text())
        scores = {
            model: {
                skill: {k: float("nan") if v is None else float(v) for k, v in metrics.items()}
                for skill, metrics in per_skill.items()
            }
            for model, per_skill in saved["scores"].items()
        }
        skills = saved_skills(saved)
        reference = saved["reference"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LosslessError(
            f"eval {step.name!r}: cannot read its saved results {json_path}: {exc}",
            hint=f"rerun it with --force {step.name}",
        ) from exc
    breaches = check_gates(step.gate, scores, reference=reference, skills=skills)
    _raise_for_breaches(step, breaches, json_path)


def _raise_for_breaches(step: EvalStep, breaches: list[Breach], json_path: Path) -> None:
    if breaches:
        lines = "\n".join(f"  - {b.message()}" for b in breaches)
        raise GateFailed(
            f"eval {step.name!r}: {len(breaches)} gate(s) breached:\n{lines}",
            hint=f"every number is in {json_path}",
        )


def _load_model(step: EvalStep, model_dir: Path, model_name: str) -> tuple[Any, Any]:
    """(model, tokenizer) from a model dir: safetensors only, fp32 on CPU, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype: Any = "auto" if device == "cuda" else torch.float32  # CPU: exact fp32 numbers
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    try:
        # safetensors only: pickle checkpoints run code on load (see docs/hub.md).
        model: Any = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, use_safetensors=True
        )
    except OSError as exc:
        raise LosslessError(
            f"eval {step.name!r}: cannot load {model_name} from {model_dir}: {exc}",
            hint="eval reads Hugging Face model dirs with .safetensors weights",
        ) from exc
    return model.to(device).eval(), tokenizer


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _score_datasets(
    step: EvalStep,
    model: Any,
    tokenizer: Any,
    model_name: str,
    datasets: Mapping[str, SkillInfo],
    rows: Mapping[str, list[dict[str, Any]]],
    metrics: tuple[str, ...],
    quiet: bool,
) -> dict[str, dict[str, float]]:
    """One loaded model's scores on every dataset."""
    import torch
    from rich.progress import Progress

    from lossless.evaluation.metrics import score_examples
    from lossless.training.datasets import to_examples

    settings = step.settings
    torch.manual_seed(int(settings.get("seed", 0)))
    max_len = min(MAX_EVAL_LEN, int(getattr(model.config, "max_position_embeddings", MAX_EVAL_LEN)))
    max_new = settings.get("max_new_tokens")
    result: dict[str, dict[str, float]] = {}
    with Progress(disable=quiet, transient=True) as bar:
        for name, info in datasets.items():
            examples = to_examples(
                rows[name], info.format, tokenizer, settings.get("chat_template")
            )
            task = bar.add_task(f"{model_name} · {name}", total=len(examples))
            result[name] = score_examples(
                model,
                tokenizer,
                examples,
                metrics=metrics,
                batch_size=int(settings.get("batch_size", DEFAULT_BATCH_SIZE)),
                max_len=max_len,
                max_new_tokens=int(max_new) if max_new else None,
                progress=partial(bar.advance, task),
            )
    return result
