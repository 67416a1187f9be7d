"""`train:` steps: load a model, build the dataset, train with transformers' Trainer, save.

Straight-line: tokenizer+model → examples → token ids → Trainer → adapter or full model,
tokenizer, metrics.json. The runner keeps `out_dir` across an interrupted run, so checkpoints in
out_dir/checkpoints are resumed from. Heavy imports live inside functions.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.recipe.model import TrainStep
from lossless.threads import torch_threads
from lossless.training.checkpoints import newest_complete

if TYPE_CHECKING:
    from lossless.engine.context import StepContext

PEFT_METHODS = ("lora", "dora", "qlora", "prompt_tuning", "prefix_tuning", "ia3")
METHODS = (*PEFT_METHODS, "full")


def run(step: TrainStep, ctx: StepContext) -> None:
    """The runner's entry: train into `ctx.out_dir`, resuming from its checkpoints."""
    base_dir = ctx.resolver.model_dir(step.base) if step.base else None
    run_train(
        step,
        base_dir=base_dir,
        out_dir=ctx.out_dir,
        recipe_dir=ctx.recipe_dir,
        quiet=ctx.options.quiet,
        seed=ctx.options.seed,
    )
    # Checkpoints exist to resume an interrupted run; once the step has finished they are
    # optimizer state the size of several models, so they go before the output is published.
    shutil.rmtree(ctx.out_dir / "checkpoints", ignore_errors=True)


def run_train(
    step: TrainStep,
    *,
    base_dir: Path | None,
    out_dir: Path,
    recipe_dir: Path,
    quiet: bool = False,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train `step` and write its output into out_dir; returns the metrics dict."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our rich bar reports progress; tqdm bars would interleave
    s = dict(step.settings)
    method = step.method or s.get("method", "lora")
    if method not in METHODS:
        raise LosslessError(
            f"train.{step.name}: method {method!r} is not supported yet",
            hint=f"use one of {', '.join(METHODS)}",
        )
    seed = int(s.get("seed", seed if seed is not None else 0))
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    bf16 = _use_bf16(s.get("precision", "auto"))
    if base_dir is None:
        if not step.init:
            raise LosslessError(f"train.{step.name}: needs `base:` or `init:`")
        if method != "full":
            raise LosslessError(
                f"train.{step.name}: a model from `init:` is trained with method: full"
            )
        from lossless.training.from_scratch import init_model

        model, tokenizer = init_model(dict(step.init), recipe_dir, seed)
        if not s.get("data"):  # init only: save the random model and its tokenizer
            model.save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
            return {"method": "init", "steps": 0, "trainable_params": model.num_parameters()}
    else:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = (
            _load_4bit(base_dir, s)
            if method == "qlora"
            else AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if method in PEFT_METHODS:
        with warnings.catch_warnings():
            # peft asks transformers 5 for `is_gradient_checkpointing`, which warns of its rename
            # on every LoRA run; the warning is about peft's code, not the user's recipe.
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
            )
            model = _wrap_peft(model, s, method, base_dir)
    if s.get("freeze"):
        from lossless.training.freeze import freeze

        fz = dict(s["freeze"])
        freeze(model, int(fz.get("first_layers", 0)), list(fz.get("patterns") or []))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    features = _build_dataset(step, s, tokenizer, recipe_dir, seed)
    collate = _collate(tokenizer.pad_token_id)
    trainer_class: Any = Trainer
    if s.get("ewc"):
        from lossless.training.ewc import ewc_trainer_class, fisher_diagonal

        ewc = dict(s["ewc"])
        old = _features(ewc, s, tokenizer, recipe_dir)[: int(ewc.get("samples", 32))]
        fisher = fisher_diagonal(model, [collate([f]) for f in old])
        anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n in fisher}
        trainer_class = ewc_trainer_class(fisher, anchor, float(ewc.get("lambda", 1.0)))
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=float(s.get("epochs", 1)),
        max_steps=int(s.get("max_steps", -1)),
        learning_rate=float(s.get("learning_rate", 2e-4 if method != "full" else 5e-5)),
        lr_scheduler_type=_scheduler(s),
        warmup_steps=float(s.get("warmup_steps", s.get("warmup_ratio", 0))),
        per_device_train_batch_size=int(s.get("batch_size", 4)),
        gradient_accumulation_steps=int(s.get("gradient_accumulation_steps", 1)),
        **_checkpointing_kwargs(TrainingArguments, bool(s.get("gradient_checkpointing", False))),
        bf16=bf16,
        fp16=s.get("precision") == "fp16",
        seed=seed,
        logging_steps=int(s.get("logging_steps", 1)),
        save_steps=int(s.get("save_steps", 50)),
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=collate,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # disable_tqdm adds it; it prints every log dict
    if not quiet:
        from lossless.training.progress import rich_progress_callback

        trainer.add_callback(rich_progress_callback(f"train {step.name}"))
    resume = newest_complete(out_dir / "checkpoints")  # torn ones are discarded, with a note
    t0 = time.perf_counter()
    with torch_threads(_training_threads(model)):  # restored after: merges keep every core
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - t0

    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    model.save_pretrained(out_dir)
    if s.get("chat_template"):
        from lossless.merge.chat_templates import resolve_chat_template

        tokenizer.chat_template = resolve_chat_template(s["chat_template"])
    tokenizer.save_pretrained(out_dir)
    metrics = {
        "method": method,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "wall_seconds": round(wall, 3),
        "trainable_params": trainable,
        "examples": len(features),
        "resumed_from": resume.name if resume else None,
        "ewc_last_penalty": getattr(trainer, "last_penalty", None),
    }
    from lossless.training.plot import write_loss_plot

    metrics["plot_note"] = write_loss_plot(
        losses, out_dir / "loss.png", f"train {step.name} ({method})"
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


TINY_MODEL_PARAMETERS = 20_000_000


def _training_threads(model: Any) -> int:
    """1 for a tiny model on CPU: its matrices are too small to split across cores, so extra
    intra-op threads only add synchronisation (see lossless/threads.py). GPU runs and larger
    models keep torch's current count."""
    import torch

    if model.device.type == "cpu" and model.num_parameters() < TINY_MODEL_PARAMETERS:
        return 1
    return torch.get_num_threads()


def _checkpointing_kwargs(arguments_class: Any, enabled: bool) -> dict[str, bool]:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name
    warns); pass whichever this version has, and only when asked, so a run stays quiet."""
    if not enabled:
        return {}
    fields = getattr(arguments_class, "__dataclass_fields__", {})
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    return {name: True}


def _scheduler(s: dict[str, Any]) -> str:
    """cosine | linear | constant; constant with a warmup is HF's constant_with_warmup."""
    name = str(s.get("lr_scheduler", "cosine"))
    if name not in ("cosine", "linear", "constant"):
        raise LosslessError(f"train: lr_scheduler {name!r} is not one of cosine, linear, constant")
    warm = s.get("warmup_steps") or s.get("warmup_ratio")
    return "constant_with_warmup" if name == "constant" and warm else name


def _use_bf16(precision: str) -> bool:
    """auto → bf16 only where CUDA supports it; fp32 on CPU."""
    import torch

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise LosslessError(f"train: precision {precision!r} is not one of auto, fp32, bf16, fp16")
    if precision == "fp16" and not torch.cuda.is_available():
        raise LosslessError(
            "train: precision fp16 needs a CUDA GPU", hint="use auto or fp32 on CPU"
        )
    if precision == "bf16":
        return True
    return precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _load_4bit(base_dir: Path, s: dict[str, Any]) -> Any:
    """QLoRA base: bitsandbytes 4-bit weights (nf4 by default, double quantisation).

    bitsandbytes 0.50 runs 4-bit layers on CPU, but its CPU kernel needs every quantised
    Linear's in_features to be a multiple of the 64-element block (hidden 32 fails inside
    bnb with "shape '[32, 0]' is invalid"); we check that up front for a clear message."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    q = dict(s.get("quantization") or {})
    if int(q.get("bits", 4)) != 4:
        raise LosslessError("qlora: only `quantization.bits: 4` is supported")
    config = AutoConfig.from_pretrained(base_dir)
    if not torch.cuda.is_available():
        sizes = [getattr(config, k, 64) for k in ("hidden_size", "intermediate_size")]
        if any(int(n) % 64 for n in sizes):
            raise LosslessError(
                f"qlora on CPU needs hidden_size and intermediate_size divisible by 64 (got {sizes})",
                hint="bitsandbytes' CPU 4-bit kernel quantises in blocks of 64; use method: lora",
            )
    dtype = getattr(
        torch,
        str(q.get("compute_dtype", "float32"))
        .replace("fp32", "float32")
        .replace("bf16", "bfloat16"),
    )
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=bool(q.get("double_quant", True)),
        bnb_4bit_compute_dtype=dtype,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=bnb, device_map=device
    )
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=bool(s.get("gradient_checkpointing", False))
    )


def _wrap_peft(model: Any, s: dict[str, Any], method: str, base_dir: Path | None) -> Any:
    """peft config for the method: prompt/prefix tuning (virtual tokens), IA³, or LoRA."""
    from peft import IA3Config, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if method == "prompt_tuning":
        pt = dict(s.get("prompt_tuning") or {})
        text = pt.get("init_text")
        extra = (
            {
                "prompt_tuning_init": "TEXT",
                "prompt_tuning_init_text": text,
                "tokenizer_name_or_path": str(base_dir),
            }
            if text
            else {}
        )
        config: Any = PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=int(pt.get("num_virtual_tokens", 8)), **extra
        )
    elif method == "prefix_tuning":
        pf = dict(s.get("prefix_tuning") or {})
        config = PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=int(pf.get("num_virtual_tokens", 8))
        )
    elif method == "ia3":
        ia = dict(s.get("ia3") or {})
        config = IA3Config(
            task_type="CAUSAL_LM",
            target_modules=ia.get("target_modules"),
            feedforward_modules=ia.get("feedforward_modules"),
        )
    else:
        return _wrap_lora(model, s, method)
    return get_peft_model(model, config)


def _wrap_lora(model: Any, s: dict[str, Any], method: str) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = dict(s.get("lora") or {})
    config = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=lora.get("target_modules", "all-linear"),
        modules_to_save=lora.get("modules_to_save"),
        use_rslora=bool(lora.get("use_rslora", False)),
        use_dora=bool(lora.get("use_dora", method == "dora")),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _data_paths(data: Any, recipe_dir: Path) -> list[tuple[str, str | None]]:
    """settings["data"] → [(path or hub id, format or None)]; local paths are recipe-relative."""
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        path, fmt = (
            (item.get("path"), item.get("format")) if isinstance(item, dict) else (item, None)
        )
        if not isinstance(path, str):
            raise LosslessError(
                "train: `data` needs a path", hint="data: file.jsonl, or {path: ..., format: chat}"
            )
        split = item.get("split") if isinstance(item, dict) else None
        local = recipe_dir / path
        if local.exists() or "." in Path(path).name:
            out.append((str(local), fmt))
        else:  # a hub dataset id; load_rows reads "org/name:split"
            out.append((f"{path}:{split}" if split else path, fmt))
    return out


def _build_dataset(
    step: TrainStep, s: dict[str, Any], tokenizer: Any, recipe_dir: Path, seed: int
) -> list[dict[str, list[int]]]:
    """Token features of `data` (several files concatenated), plus replayed old rows."""
    if not s.get("data"):
        raise LosslessError(f"train.{step.name}: `data` is required")
    features = _features(s, s, tokenizer, recipe_dir)
    if s.get("replay"):
        from lossless.training.replay import replay_rows

        replay = dict(s["replay"])
        old = _features(replay, s, tokenizer, recipe_dir)
        features += replay_rows(old, len(features), float(replay.get("fraction", 0.1)), seed)
    return features


def _features(
    block: dict[str, Any], s: dict[str, Any], tokenizer: Any, recipe_dir: Path
) -> list[dict[str, list[int]]]:
    """Token features of block["data"] (the step itself, or a replay/ewc block)."""
    from lossless.training.datasets import detect_format, encode, load_rows, to_examples

    max_len = int(s.get("max_seq_length", 512))
    features = []
    for path, fmt in _data_paths(block.get("data"), recipe_dir):
        rows = load_rows(Path(path) if Path(path).exists() else path)
        fmt = fmt or block.get("format", s.get("format", "auto"))
        if fmt == "auto":
            fmt = detect_format(rows, path)
        examples = to_examples(rows, fmt, tokenizer, s.get("chat_template"), source=path)
        loss_on = s.get("loss_on", "all" if fmt == "text" else "answer")
        encoded = [encode(tokenizer, ex, max_len, loss_on=loss_on) for ex in examples]
        if fmt == "text" and s.get("packing"):
            features += pack([ids for ids, _ in encoded], max_len)
        else:
            features += [{"input_ids": ids, "labels": labels} for ids, labels in encoded]
    return features


def pack(sequences: list[list[int]], max_len: int) -> list[dict[str, list[int]]]:
    """Raw-text packing for continued pretraining: concatenate the documents (each ends in eos)
    and cut into max_len blocks, so no step is spent on padding; the last block may be short."""
    flat = [t for seq in sequences for t in seq]
    blocks = [flat[i : i + max_len] for i in range(0, len(flat), max_len)]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def _collate(pad_id: int) -> Any:
    """Right-pad input_ids with pad_id, labels with -100; attention mask marks real tokens."""
    import torch

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        n = max(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [pad_id] * (n - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (n - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (n - len(b["input_ids"])) for b in batch]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate
