"""A train step's examples as token features: `data:` files → rows → (prompt, answer) examples →
input_ids + labels (answer-only or all tokens), optionally packed, replayed old rows mixed in;
and the collator that pads them into batches.

A feature is {"input_ids": [...], "labels": [...]}, labels -100 where no loss is taken; with
`replay:`, every feature also has `replay` (1 for a mixed-in old row), collated into a tensor. Reading
and tokenising one file is `datasets.py`'s job (shared with `eval:`); this module decides which
files, which options and in what mix.

What trl does here: packing (`trl.data_utils.pack_dataset`, the "wrapped" strategy: documents
concatenated and cut into max_seq_length blocks) and padding (trl's
`DataCollatorForLanguageModeling`). What it lacks, and so stays ours: the labels themselves
(`datasets.encode`, shared with `eval:` so both score the same tokens: trl's answer-only loss
needs its own prompt/completion tokenisation or `{% generation %}` chat templates), packing each
data part on its own so a replayed block stays a replayed block, and the `replay` marks, which
trl's collator does not carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.training.settings import Data, TrainSettings

Feature = dict[str, Any]  # input_ids, labels: list[int]; replay: 0 | 1 when the step replays


def data_paths(data: Data, recipe_dir: Path) -> list[tuple[str, str | None]]:
    """[(path or hub id, format or None)]; local paths are recipe-relative, e.g.
    (recipe_dir/"new.jsonl", None) or ("org/set:train", "chat") for a hub split."""
    out = []
    for source in data:
        local = recipe_dir / source.path
        if local.exists() or "." in Path(source.path).name:
            out.append((str(local), source.format))
        else:  # a hub dataset id; load_rows reads "org/name:split"
            hub = f"{source.path}:{source.split}" if source.split else source.path
            out.append((hub, source.format))
    return out


def build_dataset(
    name: str, settings: TrainSettings, tokenizer: Any, recipe_dir: Path, seed: int
) -> list[Feature]:
    """Token features of `data` (several files concatenated), plus replayed old rows."""
    if not settings.data:
        raise LosslessError(f"train.{name}: `data` is required")
    features = tokenize(settings.data, settings, tokenizer, recipe_dir)
    if settings.replay is not None:
        from lossless.training.replay import replay_rows

        old = tokenize(settings.replay.data, settings, tokenizer, recipe_dir)
        picked = replay_rows(old, len(features), settings.replay.fraction, seed)
        # Marked, so a distill term knows which rows are old knowledge to hold on to.
        features = [{**f, "replay": 0} for f in features] + [{**f, "replay": 1} for f in picked]
    return features


def tokenize(
    data: Data, settings: TrainSettings, tokenizer: Any, recipe_dir: Path
) -> list[Feature]:
    """Token features of `data` (the step's own, or a replay/ewc block's) with the step's
    format, chat template, length limit, loss_on and packing."""
    from lossless.training.datasets import (
        check_answers_kept,
        detect_format,
        encode,
        load_rows,
        to_examples,
    )

    max_len = settings.max_seq_length
    features: list[Feature] = []
    for path, fmt in data_paths(data, recipe_dir):
        rows = load_rows(Path(path) if Path(path).exists() else path)
        fmt = fmt or settings.format
        if fmt == "auto":
            fmt = detect_format(rows, path)
        examples = to_examples(rows, fmt, tokenizer, settings.chat_template, source=path)
        loss_on = settings.loss_on or ("all" if fmt == "text" else "answer")
        encoded = [encode(tokenizer, ex, max_len, loss_on=loss_on) for ex in examples]
        if loss_on == "answer":  # an example whose answer was cut away entirely teaches nothing
            kept = [(ids, labels) for ids, labels in encoded if any(x != -100 for x in labels)]
            check_answers_kept(path, len(encoded), len(encoded) - len(kept), max_len)
            encoded = kept
        part = [{"input_ids": ids, "labels": labels} for ids, labels in encoded]
        features += pack(part, max_len) if settings.packing else part
    return features


def pack(features: list[Feature], max_len: int) -> list[Feature]:
    """Packing: concatenate the examples (each ends in eos) and cut into max_len blocks, so no
    step is spent on padding; labels travel with their tokens (answer-only stays answer-only),
    the last block may be short. trl's `pack_dataset` ("wrapped")."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    if not features:
        return []
    table = Dataset.from_dict(
        {"input_ids": [f["input_ids"] for f in features], "labels": [f["labels"] for f in features]}
    )
    packed = pack_dataset(table, max_len, strategy="wrapped", map_kwargs={"batch_size": len(table)})
    return [
        {"input_ids": ids, "labels": labels}
        for ids, labels in zip(packed["input_ids"], packed["labels"], strict=True)
    ]


def to_dataset(features: list[Feature]) -> Any:
    """The features as a `datasets.Dataset` (what SFTTrainer takes), columns kept as they are."""
    from datasets import Dataset

    columns = list(features[0]) if features else ["input_ids", "labels"]
    return Dataset.from_dict({c: [f[c] for f in features] for c in columns})


def collator(pad_id: int) -> Any:
    """trl's padding collator (input_ids right-padded with pad_id, labels with -100, an attention
    mask), plus the `replay` marks (when the features have them) as a [batch] tensor."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    pad = DataCollatorForLanguageModeling(pad_token_id=pad_id)

    def collate(batch: list[Feature]) -> dict[str, Any]:
        out = pad([{"input_ids": b["input_ids"], "labels": b["labels"]} for b in batch])
        if "replay" in batch[0]:
            out["replay"] = torch.tensor([b["replay"] for b in batch])
        return out

    return collate
