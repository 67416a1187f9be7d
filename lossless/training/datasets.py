"""Training/eval data: read rows from files, dataset directories or the hub
(`hub_datasets.py`), detect their format, turn them into (prompt, answer) examples and token
ids with labels.

Shared by `train:` and `eval:` steps so both read a dataset the same way. Heavy imports
(datasets, pyarrow) happen inside functions: `lossless validate` imports this module.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.training.settings import DataSource

Rows = tuple[list[dict[str, Any]], str]  # the rows of a source, and its name for messages
FORMATS = ("chat", "instruction", "completion", "text")

# Prompt layout for instruction rows, e.g. "### Instruction:\nReverse: a b\n\n### Response:\n".
INSTRUCTION_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
INSTRUCTION_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


def load_source(source: DataSource, recipe_dir: Path, *, quiet: bool = False) -> Rows:
    """(rows, label) of one `data:` entry: a recipe-relative file or dataset directory, or a hub
    dataset at `source.revision` (the run pins it to a commit); the label names it in messages."""
    from lossless.recipe.references import data_kind, hub_dataset_id, local_path

    if data_kind(source.path, (), recipe_dir) == "hub":
        from lossless.training.hub_datasets import load_hub_rows

        repo, revision = hub_dataset_id(source.path)
        revision = source.revision or revision
        split = source.split or "train"
        label = f"{repo}@{revision or 'main'} ({split})"
        rows = load_hub_rows(
            repo, revision=revision, split=split, subset=source.subset, quiet=quiet
        )
        return rows, label
    path = local_path(source.path, recipe_dir) or Path(recipe_dir) / source.path
    if path.is_dir():
        from lossless.training.hub_datasets import load_directory_rows

        rows = load_directory_rows(path, split=source.split, subset=source.subset, quiet=quiet)
        return rows, f"{path} ({source.split or 'train'})"
    return load_rows(path), str(path)


def load_rows(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a local .jsonl/.json/.parquet/.csv/.txt file; an error names the file and row."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise LosslessError(
            f"dataset file not found: {p}",
            hint="check the `data:` path (relative to the recipe); a hub dataset is `org/name`",
        )
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_text(p).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LosslessError(f"{p}: row {i}: invalid JSON ({e.msg})") from None
            rows.append(_check_dict(row, p, i))
        return rows
    if suffix == ".json":
        try:
            data = json.loads(_text(p))
        except json.JSONDecodeError as e:
            raise LosslessError(f"{p}: invalid JSON at line {e.lineno} ({e.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]  # {"data": [...]} as written by some exporters
        if not isinstance(data, list):
            raise LosslessError(
                f"{p}: expected a JSON list of objects, got {type(data).__name__}",
                hint='e.g. [{"text": "..."}], or one object per line in a .jsonl file',
            )
        return [_check_dict(row, p, i) for i, row in enumerate(data, start=1)]
    if suffix == ".csv":
        return _csv_rows(p)
    if suffix == ".parquet":
        return _parquet_rows(p)
    if suffix == ".txt":
        return [{"text": line} for line in _text(p).splitlines() if line.strip()]
    raise LosslessError(
        f"{p}: unsupported data file type {suffix!r}",
        hint="use .jsonl, .json, .parquet, .csv or .txt, a dataset directory, or a hub dataset id",
    )


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    """Rows by the header line; a row with more fields than the header is an error (row 1 is
    the first line after the header), a shorter one has its missing fields left out."""
    reader = csv.DictReader(io.StringIO(_text(path), newline=""))
    rows = []
    try:
        for i, row in enumerate(reader, start=1):
            if None in row:
                raise LosslessError(
                    f"{path}: row {i} (line {reader.line_num}): "
                    f"{len(reader.fieldnames or []) + len(row[None])} fields, the header names "
                    f"{len(reader.fieldnames or [])}",
                    hint='quote fields that hold commas ("a, b"), or fix the header',
                )
            rows.append({k: v for k, v in row.items() if v is not None})
    except csv.Error as e:
        raise LosslessError(f"{path}: line {reader.line_num}: {e}") from None
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise LosslessError(
            f"{path}: not a readable parquet file ({e})",
            hint="write it again (e.g. `Dataset.to_parquet` or `DataFrame.to_parquet`)",
        ) from None
    return list(table.to_pylist())


def _text(path: Path) -> str:
    """A data file's text; a byte that is not UTF-8 is reported with its row (line) and offset."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        row = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise LosslessError(
            f"{path}: row {row}: byte 0x{raw[error.start]:02x} at column {column} is not UTF-8",
            hint="data files are read as UTF-8; re-save it as UTF-8 "
            "(e.g. `iconv -f latin1 -t utf-8`)",
        ) from None


# A train step fails when fewer of its examples than this keep any answer token after
# truncation to max_seq_length: the rest would "train" at loss 0 and teach nothing.
MIN_ANSWERED_FRACTION = 0.5


def check_answers_kept(source: str, total: int, cut: int, max_len: int) -> None:
    """Examples whose answer truncation cut away entirely: counted, said, fatal past the bound."""
    if not cut:
        return
    message = (
        f"{source}: {cut} of {total} example(s) lose their whole answer to max_seq_length "
        f"{max_len} (the prompt alone fills it)"
    )
    fix = "raise `max_seq_length`, or shorten the prompts"
    if total - cut < MIN_ANSWERED_FRACTION * total:
        kept = "none is left" if cut == total else f"only {total - cut} are left"
        raise LosslessError(f"{message}; {kept} to learn from", hint=fix)
    import sys

    print(f"warning: {message}; they are left out\n  hint: {fix}", file=sys.stderr)


def _check_dict(row: Any, path: Path, number: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise LosslessError(
            f"{path}: row {number}: expected a JSON object, got {type(row).__name__}"
        )
    return row


def detect_format(rows: list[dict[str, Any]], source: str) -> str:
    """chat (messages) / instruction (instruction+output) / completion (prompt+completion) / text."""
    if not rows:
        raise LosslessError(f"{source}: the dataset has no rows")
    keys = set(rows[0])
    if "messages" in keys or "conversations" in keys:  # conversations: ShareGPT's from/value
        return "chat"
    if {"instruction", "output"} <= keys:
        return "instruction"
    if {"prompt", "completion"} <= keys:
        return "completion"
    if "text" in keys:
        return "text"
    raise LosslessError(
        f"{source}: row 1: cannot tell the format from fields {sorted(keys)}",
        hint="rows need `messages`, `instruction`+`output`, `prompt`+`completion`, or `text`",
    )


@dataclass(frozen=True)
class Example:
    """One training/eval item: loss is taken on `answer`; `prompt` is the context."""

    prompt: str
    answer: str
    format: str


def to_examples(
    rows: list[dict[str, Any]],
    fmt: str,
    tokenizer: Any,
    chat_template: str | None,
    source: str = "data",
    numbers: Sequence[int] | None = None,
) -> list[Example]:
    """Rows → Examples. chat: prompt = template(messages before the last assistant turn,
    add_generation_prompt=True), answer = that turn's content. `chat_template`: a built-in name
    (chatml, llama3, ...) or Jinja; None = the tokenizer's own, else chatml. `numbers`: each
    row's number in its file, for messages (default 1, 2, ...)."""
    if fmt not in FORMATS:
        raise LosslessError(
            f"{source}: unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)} or auto"
        )
    template = _template(tokenizer, chat_template) if fmt == "chat" else None
    out = []
    for i, row in zip(numbers or itertools.count(1), rows, strict=False):
        where = f"{source}: row {i}"
        if fmt == "chat":
            out.append(_chat_example(row, tokenizer, template, where))
        elif fmt == "instruction":
            instruction, output = _field(row, "instruction", where), _field(row, "output", where)
            extra = row.get("input") or ""
            prompt = (INSTRUCTION_WITH_INPUT if extra else INSTRUCTION_PROMPT).format(
                instruction=instruction, input=extra
            )
            out.append(Example(prompt, output, fmt))
        elif fmt == "completion":
            out.append(Example(_field(row, "prompt", where), _field(row, "completion", where), fmt))
        else:
            out.append(Example("", _field(row, "text", where), fmt))
    return out


def _field(row: dict[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        raise LosslessError(
            f"{where}: missing field {name!r}", hint=f"fields present: {sorted(row)}"
        )
    if not isinstance(value, str):
        raise LosslessError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _template(tokenizer: Any, chat_template: str | None) -> str:
    from lossless.merge.chat_templates import BUILTIN_TEMPLATES, resolve_chat_template

    if chat_template:
        resolved = resolve_chat_template(chat_template)
        if resolved:
            return resolved
    return getattr(tokenizer, "chat_template", None) or BUILTIN_TEMPLATES["chatml"]


# ShareGPT speaker names → chat roles.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "chatgpt": "assistant",
    "bing": "assistant",
}


def _from_sharegpt(turns: Any) -> Any:
    """ShareGPT rows (`conversations: [{from: human|gpt|system, value}]`) as chat messages;
    anything malformed is returned as is, for _chat_example's checks to name."""
    if not isinstance(turns, list):
        return turns
    out = []
    for t in turns:
        if not isinstance(t, dict) or "from" not in t:
            return turns
        out.append(
            {
                "role": SHAREGPT_ROLES.get(str(t["from"]).lower(), t["from"]),
                "content": t.get("value"),
            }
        )
    return out


def _chat_example(row: dict[str, Any], tokenizer: Any, template: str | None, where: str) -> Example:
    messages = row.get("messages")
    if messages is None and "conversations" in row:
        messages = _from_sharegpt(row["conversations"])
    if not isinstance(messages, list) or not messages:
        raise LosslessError(
            f"{where}: field 'messages' must be a non-empty list of {{role, content}}"
        )
    for j, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise LosslessError(f"{where}: messages[{j}] needs string fields 'role' and 'content'")
    last = max((j for j, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise LosslessError(f"{where}: field 'messages' has no assistant turn to learn")
    prompt = tokenizer.apply_chat_template(
        messages[:last], chat_template=template, tokenize=False, add_generation_prompt=True
    )
    return Example(prompt, messages[last]["content"], "chat")


def encode(
    tokenizer: Any, example: Example, max_len: int, *, loss_on: str = "answer"
) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are -100 on prompt tokens unless loss_on="all"; eos follows
    the answer; both truncated to max_len (the prompt's start kept, the answer's end cut)."""
    prompt_ids = (
        tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
    )
    answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = [*answer_ids, tokenizer.eos_token_id]
    ids = [*prompt_ids, *answer_ids][:max_len]
    labels = list(ids) if loss_on == "all" else ([-100] * len(prompt_ids) + answer_ids)[:max_len]
    return ids, labels
