"""`generate:` steps: rehearsal data sampled from the model being protected (self-replay).

    generate:
      rehearsal:
        model: instruct                  # what `instruct` does today, in its own words
        samples: 400                     # rows kept, after length filter and dedup
        magpie: {temperature: 1.0, max_prompt_tokens: 32}

Without `prompts`, Magpie (Xu et al., 2024): the chat template's user-turn prefix alone (e.g.
"<|im_start|>user\n") makes the model write a user turn; it is cut at the end-of-turn marker and
answered greedily with the normal chat rendering. With `prompts`, each prompt is answered once.
`text:` adds raw-text rows sampled from BOS. Writes data.jsonl (chat rows), text.jsonl (text rows,
with `text:`) and generate.json (the yield: sampled, duplicates, filtered, kept).

Same seed, same bytes: every sampled row has its own torch.Generator seeded from (seed, stream,
row index), so a row does not depend on what was sampled before it. Rows are generated in batches
(left-padded, the batches fixed by row index) through transformers' `generate`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.recipe.model import GenerateStep
from lossless.training.generator import Generator, chat_renderer, load_generator
from lossless.training.self_replay import (
    Messages,
    Turns,
    Yield,
    batches,
    prompt_messages,
    row_seed,
    template_turns,
)

if TYPE_CHECKING:
    from lossless.engine.context import StepContext

ATTEMPTS_PER_ROW = 4  # Magpie and text rows: stop after 4 × `samples` tries, kept or not


def run(step: GenerateStep, ctx: StepContext) -> None:
    """The runner's entry: the model's directory, then `run_generate` into `ctx.out_dir`."""
    from lossless.engine.resolver import with_data_files

    step = with_data_files(step, ctx.resolver)  # prompts may be another generate step's rows
    seed = step.seed if step.seed is not None else (ctx.options.seed or 0)
    run_generate(
        step,
        model_dir=ctx.resolver.model_dir(step.model),
        out_dir=ctx.out_dir,
        recipe_dir=ctx.recipe_dir,
        seed=seed,
        quiet=ctx.options.quiet,
    )


# ---- the three streams -----------------------------------------------------------------------


def answer(
    gen: Generator,
    render: Callable[..., str],
    conversations: Sequence[Messages],
    step: GenerateStep,
    turns: Turns,
) -> list[str]:
    """Greedy answers to conversations (one batch), cut at the template's end of turn."""
    prompts = [gen.encode(render(c, add_generation_prompt=True)) for c in conversations]
    ids = gen.continue_ids(
        prompts, max_new_tokens=step.max_new_tokens, stop_ids=gen.stop_ids(turns.answer_stop)
    )
    return [gen.decode(i, turns.answer_stop) for i in ids]


def answer_rows(
    gen: Generator,
    render: Callable[..., str],
    conversations: Iterator[Messages],
    step: GenerateStep,
    turns: Turns,
    out: Yield,
    advance: Callable[[int], None],
) -> None:
    """Answer conversations in batches (duplicates skipped first) until `out` is full."""
    while not out.done:
        todo = []
        for messages in conversations:
            if out.new("\n".join(f"{m['role']}: {m['content']}" for m in messages)):
                todo.append(messages)
            # No more than could still be kept: answering is the expensive part.
            if len(todo) == min(step.batch_size, out.target - len(out.rows)):
                break
        if not todo:
            return
        for messages, text in zip(todo, answer(gen, render, todo, step, turns), strict=True):
            if not step.length.keeps(text):
                out.filtered += 1
                continue
            before = len(out.rows)
            out.keep({"messages": [*messages, {"role": "assistant", "content": text}]})
            advance(len(out.rows) - before)


def magpie_turns(
    gen: Generator, turns: Turns, step: GenerateStep, seed: int, out: Yield
) -> Iterator[Messages]:
    """User turns sampled from the template's user prefix, a batch at a time; a turn that is
    too short or too long counts as filtered here (the answer is filtered by `answer_rows`)."""
    prefix = gen.encode(turns.user_prefix)
    stop_ids = gen.stop_ids(turns.user_stop)
    for rows in batches(ATTEMPTS_PER_ROW * out.target, step.batch_size):
        ids = gen.continue_ids(
            [prefix] * len(rows),
            max_new_tokens=step.magpie.max_new_tokens,
            stop_ids=stop_ids,
            sampling=step.magpie,
            seeds=[row_seed(seed, "magpie", i) for i in rows],
        )
        for text in (gen.decode(i, turns.user_stop) for i in ids):
            if step.length.keeps(text):
                yield [{"role": "user", "content": text}]
            else:
                out.sampled += 1
                out.filtered += 1


def text_rows(
    gen: Generator, step: GenerateStep, seed: int, out: Yield, advance: Callable[[int], None]
) -> None:
    """Raw text sampled from BOS (eos where the tokenizer has no BOS), deduplicated, filtered."""
    start = gen.tokenizer.bos_token_id
    start = start if start is not None else gen.tokenizer.eos_token_id
    if start is None:
        raise LosslessError("`text:` samples from BOS, and the tokenizer has neither bos nor eos")
    stop_ids = gen.stop_ids("")
    for rows in batches(ATTEMPTS_PER_ROW * out.target, step.batch_size):
        if out.done:
            return
        ids = gen.continue_ids(
            [[start]] * len(rows),
            max_new_tokens=step.text.max_new_tokens,
            stop_ids=stop_ids,
            sampling=step.text,
            seeds=[row_seed(seed, "text", i) for i in rows],
        )
        for text in (gen.decode(i) for i in ids):
            if not out.new(text):
                continue
            if not step.length.keeps(text):
                out.filtered += 1
                continue
            before = len(out.rows)
            out.keep({"text": text})
            advance(len(out.rows) - before)


def run_generate(
    step: GenerateStep,
    *,
    model_dir: Path,
    out_dir: Path,
    recipe_dir: Path,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Sample, filter, deduplicate; write data.jsonl, text.jsonl and generate.json."""
    import torch

    from lossless.training.datasets import load_rows

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = load_generator(model_dir)
    render = chat_renderer(gen.tokenizer, step.chat_template)
    if step.prompts:
        path = Path(step.prompts)
        path = path if path.is_absolute() else recipe_dir / path
        conversations = [
            prompt_messages(row, f"{path}: row {i}") for i, row in enumerate(load_rows(path), 1)
        ]
        # Answers need only where turns end; a template that hides its prefix is fine here.
        turns = _turns_or_ends(render)
        chat = Yield(step.samples or len(conversations))
    else:
        turns = template_turns(render)
        chat = Yield(int(step.samples or 0))
    text = Yield(step.text_samples)
    with Bars(quiet) as progress:
        advance = progress(f"generate {step.name}: chat", chat.target)
        source = iter(conversations) if step.prompts else magpie_turns(gen, turns, step, seed, chat)
        answer_rows(gen, render, source, step, turns, chat, advance)
        if text.target:
            text_rows(gen, step, seed, text, progress(f"generate {step.name}: text", text.target))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "data.jsonl", chat.rows)
    if text.target:
        _write_jsonl(out_dir / "text.jsonl", text.rows)
    report = {
        "model": str(step.model),
        "source": "prompts" if step.prompts else "magpie",
        "seed": seed,
        "turns": asdict(turns),
        "chat": chat.counts(),
        "text": text.counts() if text.target else None,
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }
    (out_dir / "generate.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(_summary(step.name, report))
    return report


def _turns_or_ends(render: Callable[..., str]) -> Turns:
    try:
        return template_turns(render)
    except LosslessError:
        return Turns("", "", "")  # answers then stop at eos only


def _summary(name: str, report: dict[str, Any]) -> str:
    lines = []
    for stream in ("chat", "text"):
        c = report.get(stream)
        if c:
            lines.append(
                f"generate {name}: {stream}: kept {c['kept']} of {c['target']} wanted, "
                f"from {c['sampled']} sampled ({c['duplicates']} duplicates, "
                f"{c['filtered']} filtered by length)"
            )
    return "\n".join(lines)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


class Bars:
    """`with Bars(quiet) as bar: advance = bar("label", total); advance(1)` (rich)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def __enter__(self) -> Callable[[str, int], Callable[[int], None]]:
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            self.bar.start()
        return self.task

    def task(self, label: str, total: int) -> Callable[[int], None]:
        if self.bar is None:
            return lambda n: None
        task = self.bar.add_task(label, total=total)
        return lambda n: self.bar.update(task, advance=n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
