"""Held-out and training data: rows from files, their format, (prompt, answer) examples, tokens.

STAND-IN written by the eval helper so the eval step and its tests run on this branch; the real
module is train's `lossless/data.py` (same API). On merge, take train's version.

Formats (detected from the first row's keys):
    chat         {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}
    instruction  {"instruction": ..., "input": ..., "output": ...}
    completion   {"prompt": ..., "completion": ...}
    text         {"text": ...} or lines of a .txt file
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One scored item: the model reads `prompt` and is judged on `answer`."""

    prompt: str
    answer: str
    format: str


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl / .json file, or one {"text": line} per non-empty line of a text file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise LosslessError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
        return rows
    if path.suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    return [{"text": line} for line in text.splitlines() if line.strip()]


def detect_format(rows: list[dict[str, Any]], source: str) -> str:
    if not rows:
        raise LosslessError(f"{source}: no rows")
    keys = set(rows[0])
    for fmt, needed in (
        ("chat", {"messages"}),
        ("instruction", {"instruction", "output"}),
        ("completion", {"prompt", "completion"}),
        ("text", {"text"}),
    ):
        if needed <= keys:
            return fmt
    raise LosslessError(
        f"{source}: cannot tell the data format from keys {sorted(keys)}",
        hint="use messages | instruction+output | prompt+completion | text",
    )


def to_examples(
    rows: list[dict[str, Any]], fmt: str, tokenizer: Any, chat_template: str | None
) -> list[Example]:
    examples = []
    for row in rows:
        if fmt == "chat":
            messages = row["messages"]
            prompt = tokenizer.apply_chat_template(
                messages[:-1],
                chat_template=chat_template,
                tokenize=False,
                add_generation_prompt=True,
            )
            full = tokenizer.apply_chat_template(
                messages, chat_template=chat_template, tokenize=False
            )
            examples.append(Example(prompt, full[len(prompt) :], fmt))
        elif fmt == "instruction":
            extra = f"\n{row['input']}" if row.get("input") else ""
            examples.append(Example(f"{row['instruction']}{extra}\n", row["output"], fmt))
        elif fmt == "completion":
            examples.append(Example(row["prompt"], row["completion"], fmt))
        else:
            examples.append(Example("", row["text"], fmt))
    return examples


def encode(
    tokenizer: Any, example: Example, max_len: int, *, loss_on: str = "answer"
) -> tuple[list[int], list[int]]:
    """(input_ids, labels): BOS + prompt + answer + EOS; labels IGNORE on the prompt."""
    prompt = tokenizer(example.prompt, add_special_tokens=False).input_ids if example.prompt else []
    if tokenizer.bos_token_id is not None:
        prompt = [tokenizer.bos_token_id, *prompt]
    answer = tokenizer(example.answer, add_special_tokens=False).input_ids
    if tokenizer.eos_token_id is not None:
        answer = [*answer, tokenizer.eos_token_id]
    ids = (prompt + answer)[:max_len]
    masked = [IGNORE] * len(prompt) if loss_on == "answer" else prompt
    return ids, (masked + answer)[:max_len]
