"""Optional lm-evaluation-harness backend: `tasks:` in an eval step.

    eval:
      forgetting:
        models: [Qwen/Qwen2-7B-Instruct, merged]
        tasks: [hellaswag, {name: arc_easy, num_fewshot: 5}, {name: my_task, role: new}]
        num_fewshot: 0             # the default for tasks that set none (else the task's own)
        include_path: ./my_tasks   # a folder of task YAMLs (offline copies, your own tasks)
        apply_chat_template: true  # prompts through the chat template (`chat_template:` or the model's)

lm_eval is a large optional dependency (`pip install lossless[lm-eval]`), imported only when a
recipe names tasks; its absence is a clear error with the install command. Each model is loaded
once by the eval step (safetensors only) and handed to lm-eval's `HFLM` wrapper, so tasks and
datasets score the same weights. lm-eval takes one `num_fewshot` per call, so tasks are run in
one `simple_evaluate` call per distinct few-shot count, all on that one loaded model.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.evaluation.task_results import merge_outputs, plain

INSTALL_HINT = "pip install 'lossless[lm-eval]'   (or: pip install -U lm-eval)"
MIN_VERSION = (0, 4, 13)  # TaskManager.load, include_defaults, HFLM on a loaded model


def require_lm_eval() -> Any:
    """The `lm_eval` module, or a LosslessError telling the user how to install it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        import lm_eval
    except ImportError as exc:
        raise LosslessError(
            "eval `tasks:` needs lm-evaluation-harness, which is not installed",
            hint=f"{INSTALL_HINT}, or remove `tasks:` from the eval step",
        ) from exc
    try:
        installed = version("lm_eval")
    except PackageNotFoundError:  # a stand-in module (tests) or a source checkout
        return lm_eval
    numbers = tuple(int(p) for p in re.findall(r"\d+", installed)[:3])
    if numbers < MIN_VERSION:
        raise LosslessError(
            f"eval `tasks:` needs lm-eval >= {'.'.join(map(str, MIN_VERSION))}, "
            f"but {installed} is installed",
            hint=INSTALL_HINT,
        )
    return lm_eval


@dataclass(frozen=True)
class TaskSpec:
    """One entry of `tasks:`: a name, its few-shot count (None: the task's own) and its role."""

    name: str
    num_fewshot: int | None = None
    role: str = "old"


@dataclass(frozen=True)
class HarnessSettings:
    """How an eval step runs its tasks, read once from the step's keys."""

    tasks: tuple[TaskSpec, ...]
    include_path: tuple[Path, ...] = ()
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool | None = None  # None: lm-eval's default
    system_instruction: str | None = None
    chat_template: str | None = None  # a Jinja template to give the tokenizer; None: its own
    limit: int | float | None = None
    batch_size: int = 8
    seed: int = 0
    log_samples: bool = False
    trust_remote_code: bool = False  # lm-eval tasks marked unsafe (code execution) may run
    data_dir: Path | None = None  # relative `data_files` of task YAMLs are read from here


def task_specs(settings: Mapping[str, Any]) -> tuple[TaskSpec, ...]:
    """`tasks: [hellaswag, {name: arc_easy, num_fewshot: 5}]` with the step's `num_fewshot`."""
    default = settings.get("num_fewshot")
    specs = []
    for entry in settings.get("tasks") or []:
        if isinstance(entry, Mapping):
            shots = entry.get("num_fewshot", default)
            role = str(entry.get("role", "old"))
            specs.append(TaskSpec(str(entry["name"]), None if shots is None else int(shots), role))
        else:
            specs.append(TaskSpec(str(entry), None if default is None else int(default)))
    return tuple(specs)


def harness_settings(
    step_name: str,
    settings: Mapping[str, Any],
    recipe_dir: Path,
    *,
    trust_remote_code: bool = False,
) -> HarnessSettings:
    """The step's task keys, with `include_path` folders found (beside the recipe, then here)
    and refused when they hold Python a recipe from elsewhere could use to run code."""
    from lossless.merge.chat_templates import resolve_chat_template
    from lossless.recipe.references import local_path

    where = f"eval.{step_name}.include_path"
    paths = settings.get("include_path") or []
    folders = []
    for text in [paths] if isinstance(paths, str) else paths:
        found = local_path(str(text), recipe_dir)
        if found is None or not found.is_dir():
            raise LosslessError(
                f"{where}: task folder {text} does not exist",
                hint="paths are relative to the recipe's directory (then the current directory)",
            )
        python = sorted(found.rglob("*.py"))
        if python and not trust_remote_code:
            raise LosslessError(
                f"{where}: task folder {found} holds Python ({python[0].name}) that lm-eval "
                "imports and runs when a task names it (`!function`)",
                hint="if you trust this folder, pass --trust-remote-code on the command line",
            )
        folders.append(found.absolute())
    template = settings.get("chat_template")
    limit = settings.get("limit", settings.get("max_samples"))
    multiturn = settings.get("fewshot_as_multiturn")
    instruction = settings.get("system_instruction")
    return HarnessSettings(
        tasks=task_specs(settings),
        include_path=tuple(folders),
        apply_chat_template=bool(settings.get("apply_chat_template", False)),
        fewshot_as_multiturn=None if multiturn is None else bool(multiturn),
        system_instruction=None if instruction is None else str(instruction),
        chat_template=resolve_chat_template(str(template)) if template else None,
        limit=limit,
        batch_size=int(settings.get("batch_size", 8)),
        seed=int(settings.get("seed", 0)),
        log_samples=bool(settings.get("log_samples", False)),
        trust_remote_code=trust_remote_code,
        data_dir=recipe_dir.absolute(),
    )


def task_manager(step_name: str, harness: HarnessSettings, *, quiet: bool = False) -> Any:
    """lm-eval's TaskManager, with every task name checked before any model is loaded.

    Indexing lm-eval's own ~10k task files takes seconds to tens of seconds; when every task
    (and every member of a group) is in `include_path`, only those folders are indexed.
    """
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    _quiet_logs(quiet)
    names = [spec.name for spec in harness.tasks]
    include = [str(p) for p in harness.include_path] or None
    if include:
        local = TaskManager(include_path=include, include_defaults=False)
        if _covers(local.task_index, names):
            return local
    manager = TaskManager(include_path=include)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        raise LosslessError(
            f"eval.{step_name}.tasks: lm-eval has no task {', '.join(map(repr, unknown))}",
            hint=(f"did you mean {', '.join(close)}? " if close else "")
            + "list them with `lm_eval ls tasks`; a folder of your own goes in `include_path:`",
        )
    return manager


def _covers(index: Mapping[str, Any], names: Sequence[str]) -> bool:
    """Does this task index hold `names` and, for groups, every task they name (transitively)?
    A group member given as an inline config (a dict) needs no index entry of its own."""
    pending, seen = list(names), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        entry = index.get(name)
        if entry is None:
            return False
        if entry.kind.name == "GROUP":
            members = (entry.cfg or {}).get("task") or []
            for member in members if isinstance(members, list) else [members]:
                if isinstance(member, str):
                    pending.append(member)
                elif isinstance(member, Mapping) and member.get("task") in index:
                    pending.append(str(member["task"]))
    return True


def run_tasks(
    model: Any,
    tokenizer: Any,
    harness: HarnessSettings,
    manager: Any,
    *,
    label: str,
    quiet: bool = False,
) -> dict[str, Any]:
    """Every task on one loaded model → lm-eval's output (merged over few-shot settings).

    The output's samples (each prompt as lm-eval built it, and the model's answers) are kept
    under `samples` only when `log_samples` is set."""
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    if harness.apply_chat_template:
        if harness.chat_template:
            tokenizer.chat_template = harness.chat_template
        elif not getattr(tokenizer, "chat_template", None):
            raise LosslessError(
                f"apply_chat_template: {label}'s tokenizer has no chat template",
                hint="name one with the eval step's `chat_template:` (e.g. chatml)",
            )
    _quiet_logs(quiet)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=harness.batch_size)
    groups: dict[int | None, list[str]] = {}
    for spec in harness.tasks:
        groups.setdefault(spec.num_fewshot, []).append(spec.name)
    outputs: list[Mapping[str, Any]] = []
    samples: dict[str, Any] = {}
    for shots, names in groups.items():
        kwargs = _evaluate_kwargs(harness, names, shots)
        try:
            with _in_directory(harness.data_dir), _no_stderr(quiet):
                output = lm_eval.simple_evaluate(model=lm, task_manager=manager, **kwargs)
        except Exception as exc:  # lm_eval raises plain exceptions for bad task configs
            raise LosslessError(
                f"lm-eval failed on {label} for tasks {', '.join(names)}: "
                f"{type(exc).__name__}: {exc}",
                hint="check the task's YAML (its dataset must be readable offline if you are)",
            ) from exc
        outputs.append(output or {})
        samples.update((output or {}).get("samples") or {})
    merged = plain(merge_outputs(outputs))
    if harness.log_samples:
        merged["samples"] = plain(samples)
    return merged


class _KnownNoise(logging.Filter):
    """lm-eval's warnings about how lossless calls it (a loaded model, on purpose)."""

    NOISE = ("`pretrained` model kwarg is not of type `str`", "Passed an already-initialized")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def _quiet_logs(quiet: bool) -> None:
    """lm-eval's warnings shown (but not the ones about lossless's own call), none with -q."""
    logger = logging.getLogger("lm_eval")
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    for child in ("lm_eval.models.huggingface", "lm_eval.evaluator"):
        named = logging.getLogger(child)
        if not any(isinstance(f, _KnownNoise) for f in named.filters):
            named.addFilter(_KnownNoise())


@contextmanager
def _in_directory(path: Path | None) -> Iterator[None]:
    """Relative `data_files` in a task YAML are found from the recipe's directory, like every
    other path of a recipe (datasets resolves them from the working directory)."""
    if path is None:
        yield
        return
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _no_stderr(quiet: bool) -> Iterator[None]:
    """-q: lm-eval's tqdm bars (sys.stderr) and its subprocesses (`git describe` for its report,
    straight to file descriptor 2) say nothing; errors still raise."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull, redirect_stderr(devnull):
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def write_samples(folder: Path, model: str, samples: Mapping[str, Any]) -> None:
    """`log_samples: true`: lm-eval's per-example records (each prompt as built, the model's
    answers), one `<folder>/<model>/<task>.jsonl` per task."""
    import json

    where = folder / re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    where.mkdir(parents=True, exist_ok=True)
    for task, records in samples.items():
        (where / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _evaluate_kwargs(harness: HarnessSettings, names: Sequence[str], shots: int | None) -> dict:
    kwargs: dict[str, Any] = {
        "tasks": list(names),
        "num_fewshot": shots,
        "limit": harness.limit,
        "log_samples": harness.log_samples,
        "apply_chat_template": harness.apply_chat_template,
        "system_instruction": harness.system_instruction,
        "random_seed": harness.seed,
        "numpy_random_seed": harness.seed,
        "torch_random_seed": harness.seed,
        "fewshot_random_seed": harness.seed,
        "confirm_run_unsafe_code": harness.trust_remote_code,
    }
    if harness.fewshot_as_multiturn is not None:
        kwargs["fewshot_as_multiturn"] = harness.fewshot_as_multiturn
    return kwargs
