"""`train:` steps: load a model, build the dataset, train with trl's SFTTrainer, save.

Straight-line: tokenizer+model → examples → token ids → SFTTrainer → adapter or full model,
tokenizer, metrics.json. The runner keeps `out_dir` across an interrupted run, so checkpoints in
out_dir/checkpoints are resumed from. With `lossless run --launcher`, `run` hands the step to
training/launch.py and `run_train` runs once per rank: every rank trains, rank 0 writes. Heavy
imports live inside functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.recipe.model import TrainStep
from lossless.threads import torch_threads
from lossless.training.checkpoints import newest_complete
from lossless.training.distributed import check_processes, distributed_arguments, save_sharded
from lossless.training.examples import (
    build_dataset,
    collator,
    hold_out,
    pack,
    to_dataset,
    tokenize,
)
from lossless.training.loss_terms import EwcTerm, LossTerm, trainer_class
from lossless.training.peft_setup import load_base, wrap_peft
from lossless.training.settings import METHODS, TrainSettings

if TYPE_CHECKING:
    from lossless.engine.context import RunOptions, StepContext

__all__ = ["pack", "run", "run_train"]  # pack: tests and callers import it from here


def run(step: TrainStep, ctx: StepContext) -> None:
    """The runner's entry: train into `ctx.out_dir`, resuming from its checkpoints."""
    from lossless.engine.hub_data import located_hub_errors, with_pinned_datasets
    from lossless.engine.resolver import with_data_files

    step = with_data_files(step, ctx.resolver)  # `generate:` step names → their files
    step = with_pinned_datasets(step, ctx.recipe, ctx.resolver.dataset_commit)  # hub: a commit
    base_dir = ctx.resolver.model_dir(step.base) if step.base else None
    inputs: dict[str, Any] = dict(
        base_dir=base_dir,
        teacher_dir=_teacher_dir(step, ctx, base_dir),
        out_dir=ctx.out_dir,
        recipe_dir=ctx.recipe_dir,
        quiet=ctx.options.quiet,
        seed=ctx.options.seed,
    )
    launch = ctx.options.launch
    with located_hub_errors(ctx.recipe, step.name):
        if launch is not None and step.settings.data:  # an `init:`-only step has nothing to train
            from lossless.training.launch import run_launched

            log = ctx.target.parent / f".{ctx.target.name}.launch.log"
            run_launched(step, launch, log=log, **inputs)
        else:
            run_train(step, **inputs)
    if step.base is not None and step.base.name not in ctx.recipe.step_names:
        from lossless.recipe.references import classify_ref
        from lossless.tensors.adapters import record_base_model

        if classify_ref(step.base, ctx.recipe.step_names, ctx.recipe_dir) == "hub":
            record_base_model(
                ctx.out_dir, step.base.name, step.base.revision
            )  # not the local snapshot path
    # Checkpoints exist to resume an interrupted run; once the step has finished they are
    # optimizer state the size of several models, so they go before the output is published.
    shutil.rmtree(ctx.out_dir / "checkpoints", ignore_errors=True)


def preflight(step: TrainStep, options: RunOptions) -> None:
    """Before the run starts: what the step needs to launch is there (training/launch.py)."""
    from lossless.training.launch import check_launchable

    check_launchable(step, options)


def run_train(
    step: TrainStep,
    *,
    base_dir: Path | None,
    out_dir: Path,
    recipe_dir: Path,
    quiet: bool = False,
    seed: int | None = None,
    teacher_dir: Path | None = None,
    processes: int | None = None,
) -> dict[str, Any]:
    """Train `step` and write its output into out_dir; returns the metrics dict. teacher_dir:
    the `distill.model`'s files (not needed when the teacher is the base of a PEFT step).
    Under a launcher every rank calls this and rank 0 writes; `processes`: how many ranks the
    launch was asked for, checked against how many the trainer sees (None: not checked)."""
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig

    hf_logging.disable_progress_bar()  # our rich bar reports progress; tqdm bars would interleave
    s = step.settings
    if s.method not in METHODS:
        raise LosslessError(
            f"train.{step.name}: method {s.method!r} is not supported yet",
            hint=f"use one of {', '.join(METHODS)}",
        )
    seed = s.seed if s.seed is not None else seed if seed is not None else 0
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = os.environ.get("RANK", "0") == "0"  # rank 0 of a launch, or the one process
    from lossless.training.precision import decide, machine

    precision = decide(
        s.dtype,
        s.precision,
        s.quantization.compute_dtype if s.method == "qlora" else None,
        s.attn_implementation,
        machine(),
    )
    if not quiet and writer:
        _log(f"train {step.name}: {precision.describe(s.dtype)}")

    # 1. tokenizer + model (from the base, or random from `init:`), wrapped in the peft adapter
    if base_dir is None:
        if s.init is None:
            raise LosslessError(f"train.{step.name}: needs `base:` or `init:`")
        if s.method != "full":
            raise LosslessError(
                f"train.{step.name}: a model from `init:` is trained with method: full"
            )
        from lossless.training.from_scratch import init_model

        model, tokenizer = init_model(s.init, recipe_dir, seed)
        model = model.to(getattr(torch, precision.dtype))
        if not s.data:  # init only: save the random model and its tokenizer
            if writer:
                model.save_pretrained(out_dir)
                tokenizer.save_pretrained(out_dir)
            return {"method": "init", "steps": 0, "trainable_params": model.num_parameters()}
    else:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = load_base(base_dir, s, precision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if s.is_peft:
        model = wrap_peft(model, s, base_dir)
    if s.freeze is not None:
        from lossless.training.freeze import freeze

        freeze(model, s.freeze.first_layers, list(s.freeze.patterns))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # 2. data: token features (replay rows marked) and a collator; the extra loss terms: EWC's
    # penalty (its Fisher from the old data) and distillation's KL to the teacher
    features = build_dataset(step.name, s, tokenizer, recipe_dir, seed, quiet=quiet)
    features, held_out = hold_out(features, s.eval_split, seed)
    collate = collator(tokenizer.pad_token_id)
    terms: list[LossTerm] = []
    if s.ewc is not None:
        from lossless.training.ewc import fisher_diagonal

        old = tokenize(s.ewc.data, s, tokenizer, recipe_dir, seed=seed, total=s.ewc.samples)
        old = old[: s.ewc.samples]  # a plain list: its first rows; a mixture: `samples` by weight
        fisher = fisher_diagonal(model, [collate([f]) for f in old])
        anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n in fisher}
        terms.append(EwcTerm(fisher, anchor, s.ewc.lam))
    distill = None
    if s.distill is not None:
        from lossless.training.distill import distill_term, teacher_is_base

        same = teacher_is_base(s.distill, step.base)
        distill = distill_term(
            s.distill,
            model,
            is_peft=s.is_peft,
            same_as_base=same,
            teacher_dir=teacher_dir or (base_dir if same else None),
        )
        terms.append(distill)

    # 3. trl's SFTTrainer, resumed from out_dir/checkpoints when an earlier run was interrupted.
    # The features arrive tokenised, labelled and packed (training/examples.py), so trl's own
    # dataset preparation is skipped; its collator pads them, its fused LM head takes the loss.
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type=_scheduler(s),
        warmup_steps=s.warmup,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        **_checkpointing_kwargs(SFTConfig, s.gradient_checkpointing),
        bf16=precision.bf16,
        fp16=precision.fp16,
        seed=seed,
        logging_steps=s.logging_steps,
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        **_optional(optim=s.optim),
        report_to=list(s.report_to) or "none",
        eval_strategy=("steps" if s.eval_steps else "no") if held_out else "no",
        eval_steps=s.eval_steps,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        neftune_noise_alpha=s.neftune_noise_alpha,
        max_length=s.max_seq_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,  # keeps the `replay` marks for the loss terms
        **distributed_arguments(s, recipe_dir),  # fsdp / deepspeed, for a launched step
        **dict(s.trainer),  # checked against SFTConfig's fields by validation
    )
    trainer = trainer_class(terms)(
        model=model,
        args=args,
        train_dataset=to_dataset(features),
        eval_dataset=to_dataset(held_out) if held_out else None,
        data_collator=collate,
        processing_class=tokenizer,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # disable_tqdm adds it; it prints every log dict
    check_processes(trainer, step, processes)
    if not quiet and writer:
        from lossless.training.progress import rich_progress_callback

        trainer.add_callback(rich_progress_callback(f"train {step.name}"))
    resume = newest_complete(out_dir / "checkpoints", quiet=quiet)  # torn ones are discarded
    t0 = time.perf_counter()
    with torch_threads(_training_threads(model)), _tensorboard_dir(s, out_dir / "logs"):
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        final_eval = trainer.evaluate() if held_out else {}
    wall = time.perf_counter() - t0

    # 4. save: the adapter (or full model), the tokenizer, metrics.json and a loss plot
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        save_sharded(trainer, out_dir)  # every rank: the weights are gathered from all of them
    elif writer:
        model.save_pretrained(out_dir)
    if not writer:
        return {}
    if s.chat_template:
        from lossless.merge.chat_templates import resolve_chat_template

        tokenizer.chat_template = resolve_chat_template(s.chat_template)
    tokenizer.save_pretrained(out_dir)
    metrics = {
        "method": s.method,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "wall_seconds": round(wall, 3),
        "trainable_params": trainable,
        "examples": len(features),
        "processes": trainer.args.world_size,
        "resumed_from": resume.name if resume else None,
        "eval_examples": len(held_out),
        "eval_loss": final_eval.get("eval_loss"),
        "eval_losses": [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e],
        "ewc_last_penalty": _last(trainer.term_values.get("ewc")),
        # The terms added to the cross-entropy, one value per micro-batch.
        "loss_terms": trainer.term_values,
    }
    if distill is not None:
        metrics["distill_kl"] = distill.kl_values  # unweighted, before weight · T²
        metrics["distill_last_kl"] = _last(distill.kl_values)
    from lossless.training.plot import write_loss_plot

    metrics["plot_note"] = write_loss_plot(
        losses, out_dir / "loss.png", f"train {step.name} ({s.method})"
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _teacher_dir(step: TrainStep, ctx: StepContext, base_dir: Path | None) -> Path | None:
    """The distill teacher's files; none when the adapter-off student is the teacher."""
    distill = step.settings.distill
    if distill is None:
        return None
    from lossless.recipe.model import ModelRef
    from lossless.training.distill import teacher_is_base

    if teacher_is_base(distill, step.base):
        return None if step.settings.is_peft else base_dir
    return ctx.resolver.model_dir(ModelRef.parse(distill.model))


@contextlib.contextmanager
def _tensorboard_dir(s: TrainSettings, logs: Path) -> Iterator[None]:
    """transformers' tensorboard callback writes where TENSORBOARD_LOGGING_DIR says: the step's
    output (`logs/`), not the checkpoints dir that is deleted once the step has finished."""
    if "tensorboard" not in s.report_to:
        yield
        return
    before = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(logs)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = before


def _last(values: list[float] | None) -> float | None:
    return values[-1] if values else None


TINY_MODEL_PARAMETERS = 20_000_000


def _training_threads(model: Any) -> int:
    """1 for a tiny model on CPU: its matrices are too small to split across cores, so extra
    intra-op threads only add synchronisation (see lossless/threads.py). GPU runs and larger
    models keep torch's current count."""
    import torch

    if model.device.type == "cpu" and model.num_parameters() < TINY_MODEL_PARAMETERS:
        return 1
    return torch.get_num_threads()


def _optional(**values: Any) -> dict[str, Any]:
    """The keyword arguments that are set (a None leaves the trainer's default)."""
    return {k: v for k, v in values.items() if v}


def _checkpointing_kwargs(arguments_class: Any, enabled: bool) -> dict[str, Any]:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name
    warns); pass whichever this version has, always: trl's SFTConfig turns it on by default,
    which slows a step down and drops prefix tuning's cache."""
    fields = getattr(arguments_class, "__dataclass_fields__", {})
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    return {name: enabled}


SCHEDULERS = (
    "cosine",
    "linear",
    "constant",
    "constant_with_warmup",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
    "reduce_lr_on_plateau",
)


def _scheduler(s: TrainSettings) -> str:
    """transformers' scheduler names; constant with a warmup is HF's constant_with_warmup."""
    name = s.lr_scheduler
    if name not in SCHEDULERS:
        raise LosslessError(f"train: lr_scheduler {name!r} is not one of {', '.join(SCHEDULERS)}")
    warm = s.warmup_steps or s.warmup_ratio
    return "constant_with_warmup" if name == "constant" and warm else name


def _log(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(text, highlight=False)
