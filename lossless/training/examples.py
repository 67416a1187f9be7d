"""A train step's examples as token features: `data:` files → rows → (prompt, answer) examples →
input_ids + labels (answer-only or all tokens), raw text optionally packed, replayed old rows
mixed in; and the collator that pads them into batches.

A feature is {"input_ids": [...], "labels": [...]}, labels -100 where no loss is taken; with
`replay:`, every feature also has `replay` (1 for a mixed-in old row), collated into a tensor. Reading
and tokenising one file is `datasets.py`'s job (shared with `eval:`); this module decides which
files, which options and in what mix.
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
        if fmt == "text" and settings.packing:
            features += pack([ids for ids, _ in encoded], max_len)
        else:
            features += [{"input_ids": ids, "labels": labels} for ids, labels in encoded]
    return features


def pack(sequences: list[list[int]], max_len: int) -> list[Feature]:
    """Raw-text packing for continued pretraining: concatenate the documents (each ends in eos)
    and cut into max_len blocks, so no step is spent on padding; the last block may be short."""
    flat = [t for seq in sequences for t in seq]
    blocks = [flat[i : i + max_len] for i in range(0, len(flat), max_len)]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def collator(pad_id: int) -> Any:
    """Right-pad input_ids with pad_id, labels with -100; attention mask marks real tokens;
    `replay` marks (when the features have them) become a [batch] tensor."""
    import torch

    def collate(batch: list[Feature]) -> dict[str, Any]:
        n = max(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [pad_id] * (n - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (n - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (n - len(b["input_ids"])) for b in batch]
        out = {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }
        if "replay" in batch[0]:
            out["replay"] = torch.tensor([b["replay"] for b in batch])
        return out

    return collate
