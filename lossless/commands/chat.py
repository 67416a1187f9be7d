"""`lossless chat MODEL`: talk to a model in the terminal, the "try the merged model" step.

The conversation is rendered with the model's own chat template (ChatML when the tokenizer has
none), tokens are printed as they are generated, and decoding is greedy at `--temperature 0`
(the default), so `lossless chat out/ --prompt "..."` is reproducible in scripts.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

EXIT_WORDS = {"exit", "quit", "/exit", "/quit"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This command's arguments (the CLI assembles its parser from every command's)."""
    p = sub.add_parser("chat", help="talk to a model or a recipe step's output in the terminal")
    p.add_argument("model", help="model directory, hub id, or RECIPE:STEP")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--prompt", help="one-shot: answer this prompt and exit")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    model_dir, base_dir = _model_dir(args.model)
    return chat(model_dir, args, base_dir)


def _model_dir(reference: str) -> tuple[Path, Path | None]:
    """(model or adapter directory, the adapter's base directory or None).

    A local directory as is; `RECIPE.yaml:STEP` the output of a recipe's step (which must have
    run); a hub id (`org/name[@rev]`) downloaded into the cache. A PEFT adapter directory
    (adapter_config.json) is chatted with on its base: the recipe step's base, or the
    `base_model_name_or_path` the adapter records.
    """
    recipe_part, colon, step_name = reference.rpartition(":")
    if colon and recipe_part.endswith((".yaml", ".yml")) and Path(recipe_part).is_file():
        return _step_output(Path(recipe_part), step_name)
    from lossless.hub.repos import resolve_model

    path = Path(reference) if Path(reference).is_dir() else resolve_model(reference).path
    return path, _adapter_base(path)


def _adapter_base(path: Path) -> Path | None:
    from lossless.engine.resolver import ADAPTER_CONFIG, is_adapter_dir
    from lossless.hub.repos import resolve_model

    if not is_adapter_dir(path):
        return None
    import json

    base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise LosslessError(
            f"{path} is an adapter that does not say which model it was trained on",
            hint="set `base_model_name_or_path` in its adapter_config.json",
        )
    local = Path(base) if Path(base).is_absolute() else path / base
    return local if local.is_dir() else resolve_model(base).path


def _step_output(recipe_path: Path, step_name: str) -> tuple[Path, Path | None]:
    from lossless.engine.resolver import is_adapter_dir
    from lossless.engine.runner import Runner, RunOptions
    from lossless.errors import RecipeInvalid
    from lossless.recipe.model import TrainStep
    from lossless.validation.recipe_check import load_recipe

    try:
        recipe, _ = load_recipe(recipe_path)
    except RecipeInvalid as invalid:
        raise LosslessError(
            f"{recipe_path} is not a valid recipe", hint=f"lossless validate {recipe_path}"
        ) from invalid
    runner = Runner(recipe, RunOptions(quiet=True))
    found = {s.name: runner.status(s) for s in runner.order}
    status = found.get(step_name)
    if status is None:
        raise LosslessError(
            f"{recipe_path} has no step `{step_name}`", hint=f"steps: {', '.join(found)}"
        )
    if status.output is None or not status.output.is_dir() or status.state == "missing":
        raise LosslessError(
            f"step `{step_name}` has no output yet",
            hint=f"lossless run {recipe_path} --only {step_name}",
        )
    step = recipe.step(step_name)
    if not (isinstance(step, TrainStep) and step.base and is_adapter_dir(status.output)):
        return status.output, None
    for name, other in found.items():  # the base may be another step's output
        if other.state == "fresh" and other.output is not None:
            runner.resolver.step_dirs[name] = other.output
    return status.output, runner.resolver.model_dir(step.base)


def chat(model_dir: Path, args: argparse.Namespace, base_dir: Path | None = None) -> int:
    """One-shot with `args.prompt`, else an interactive loop until EOF or `exit`."""
    trust = getattr(args, "trust_remote_code", False)
    tokenizer, model = _load(model_dir, trust_remote_code=trust, base_dir=base_dir)
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    if args.prompt is not None:
        messages.append({"role": "user", "content": args.prompt})
        _answer(tokenizer, model, messages, args)
        return 0
    print(f"chatting with {model_dir} (type `exit` or Ctrl-D to leave)", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip() in EXIT_WORDS:
            return 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        messages.append({"role": "assistant", "content": _answer(tokenizer, model, messages, args)})


def _load(
    model_dir: Path, *, trust_remote_code: bool, base_dir: Path | None = None
) -> tuple[Any, Any]:
    """Tokenizer and model; for an adapter, the base model with the adapter on top (peft)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lossless.merge.chat_templates import CHATML

    weights_dir = base_dir or model_dir
    if not (weights_dir / "config.json").is_file():
        raise LosslessError(
            f"{weights_dir} is not a model directory (config.json is missing)",
            hint="pass a directory written by `lossless run` or `save_pretrained`, or an adapter",
        )
    has_tokenizer = (model_dir / "tokenizer_config.json").is_file()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir if has_tokenizer else weights_dir, trust_remote_code=trust_remote_code
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            weights_dir, dtype="auto", trust_remote_code=trust_remote_code
        )
        if base_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, model_dir)
    except (OSError, ValueError) as e:
        raise LosslessError(f"cannot load the model in {model_dir}: {e}") from None
    if not tokenizer.chat_template:
        print(f"note: {model_dir} has no chat template; using ChatML", file=sys.stderr)
        tokenizer.chat_template = CHATML
    model.eval()
    return tokenizer, model


def _stop_ids(tokenizer: Any) -> list[int]:
    """EOS plus the end-of-turn markers of common templates that are in the vocabulary."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "[|endofturn|]"):
        if marker in vocab and vocab[marker] not in ids:
            ids.append(vocab[marker])
    return ids


def _answer(tokenizer: Any, model: Any, messages: list[dict[str, str]], args: Any) -> str:
    """Generate the assistant's reply, printing it token by token; returns the full text."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampled = args.temperature > 0
    stop = _stop_ids(tokenizer)
    kwargs: dict[str, Any] = dict(
        **inputs,
        max_new_tokens=args.max_new_tokens,
        do_sample=sampled,
        streamer=streamer,
        eos_token_id=stop or None,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0],
    )
    if sampled:
        kwargs.update(temperature=args.temperature, top_p=args.top_p)
    else:  # a model's generation_config may ask for sampling; greedy means greedy
        kwargs.update(temperature=None, top_p=None, top_k=None)
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as e:  # surfaced in the main thread below
            failure.append(e)
            streamer.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    parts = []
    for piece in streamer:
        parts.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    worker.join()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if failure:
        raise LosslessError(f"generation failed: {failure[0]}") from failure[0]
    return "".join(parts)
