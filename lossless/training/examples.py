"""A train step's examples as token features: `data:` files → rows → (prompt, answer) examples →
input_ids + labels (answer-only or all tokens), several datasets concatenated or mixed by weight
(`mixing.py`), optionally packed, replayed old rows mixed in, a held-out split; and the collator
that pads them into batches.

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
from lossless.training.settings import Data, DataSource, TrainSettings, is_mixture

Feature = dict[str, Any]  # input_ids, labels: list[int]; replay: 0 | 1 when the step replays


def build_dataset(
    name: str,
    settings: TrainSettings,
    tokenizer: Any,
    recipe_dir: Path,
    seed: int,
    *,
    quiet: bool = False,
) -> list[Feature]:
    """Token features of `data` (concatenated, or mixed by weight), plus replayed old rows."""
    if not settings.data:
        raise LosslessError(f"train.{name}: `data` is required")
    features = tokenize(settings.data, settings, tokenizer, recipe_dir, seed=seed, quiet=quiet)
    if settings.replay is not None:
        from lossless.training.replay import replay_rows

        data, fraction = settings.replay.data, settings.replay.fraction
        if is_mixture(data):  # the replayed count itself is shared out by weight
            count = round(fraction * len(features))
            picked = tokenize(
                data, settings, tokenizer, recipe_dir, seed=seed, total=count, quiet=quiet
            )
        else:
            old = tokenize(data, settings, tokenizer, recipe_dir, quiet=quiet)
            picked = replay_rows(old, len(features), fraction, seed)
        # Marked, so a distill term knows which rows are old knowledge to hold on to.
        features = [{**f, "replay": 0} for f in features] + [
            {**_without_origin(f), "replay": 1} for f in picked
        ]
    return features


def tokenize(
    data: Data,
    settings: TrainSettings,
    tokenizer: Any,
    recipe_dir: Path,
    *,
    seed: int = 0,
    total: int | None = None,
    quiet: bool = False,
) -> list[Feature]:
    """Token features of `data` (the step's own, or a replay/ewc block's) with the step's
    format, chat template, length limit, loss_on and packing.

    Plain entries are concatenated, each source's rows in order. Weighted entries are mixed
    (`mixing.py`): `total` rows (default: as many as all the sources have together) shared out
    by weight, in an order drawn from `seed`; each such feature carries its `origin` (source,
    row) until `hold_out`, so every copy of a repeated row lands on the same side of a split."""
    from lossless.training.datasets import load_source

    loaded = [load_source(source, recipe_dir, quiet=quiet) for source in data]
    if not is_mixture(data):
        features: list[Feature] = []
        for source, (rows, label) in zip(data, loaded, strict=True):
            part = [f for f in _encode(rows, rows, None, source, label, settings, tokenizer) if f]
            features += pack(part, settings.max_seq_length) if settings.packing else part
        return features
    from lossless.training.mixing import mix

    sizes = [len(rows) for rows, _ in loaded]
    weights = [source.weight for source in data]
    if any(w is None or w <= 0 for w in weights):
        raise LosslessError(
            f"data: weights {weights}: in a mixture every dataset needs a positive weight",
            hint="give every entry a `weight`, or none to concatenate them",
        )
    picks = mix(
        sizes, [float(w or 0) for w in weights], sum(sizes) if total is None else total, seed
    )
    encoded: dict[tuple[int, int], Feature | None] = {}
    for s, (source, (rows, label)) in enumerate(zip(data, loaded, strict=True)):
        wanted = sorted({j for t, j in picks if t == s})  # each picked row encoded once
        chosen = [rows[j] for j in wanted]
        numbers = [j + 1 for j in wanted]
        features_s = _encode(chosen, rows, numbers, source, label, settings, tokenizer)
        encoded.update(((s, j), f) for j, f in zip(wanted, features_s, strict=True))
    mixed = [{**f, "origin": pick} for pick in picks if (f := encoded[pick]) is not None]
    if settings.packing:
        return pack(mixed, settings.max_seq_length)
    return mixed


def _encode(
    rows: list[dict[str, Any]],
    all_rows: list[dict[str, Any]],
    numbers: list[int] | None,
    source: DataSource,
    label: str,
    settings: TrainSettings,
    tokenizer: Any,
) -> list[Feature | None]:
    """One feature per row (None where truncation cut the whole answer away); the format is
    told from the source's first row (`all_rows`), whichever rows are encoded."""
    from lossless.training.datasets import check_answers_kept, detect_format, encode, to_examples

    max_len = settings.max_seq_length
    fmt = source.format or settings.format
    if fmt == "auto":
        fmt = detect_format(all_rows, label)
    examples = to_examples(rows, fmt, tokenizer, settings.chat_template, label, numbers)
    loss_on = settings.loss_on or ("all" if fmt == "text" else "answer")
    out: list[Feature | None] = []
    for example in examples:
        ids, labels = encode(tokenizer, example, max_len, loss_on=loss_on)
        answered = loss_on != "answer" or any(x != -100 for x in labels)
        out.append({"input_ids": ids, "labels": labels} if answered else None)
    check_answers_kept(label, len(out), out.count(None), max_len)
    return out


def hold_out(
    features: list[Feature], fraction: float | None, seed: int
) -> tuple[list[Feature], list[Feature]]:
    """(train, held out): round(fraction × n) examples (at least 1) drawn with `seed`. The
    copies of a row a mixture repeated count as one and are held out together."""
    groups: dict[Any, list[int]] = {}
    for i, feature in enumerate(features):
        groups.setdefault(feature.get("origin", ("example", i)), []).append(i)
    if not fraction:
        return [_without_origin(f) for f in features], []
    import random

    k = max(1, round(fraction * len(groups)))
    if k >= len(groups):
        raise LosslessError(
            f"train: eval_split {fraction} of {len(groups)} examples leaves none to train on"
        )
    keys = list(groups)
    held = {i for g in random.Random(seed).sample(range(len(keys)), k) for i in groups[keys[g]]}
    return (
        [_without_origin(f) for i, f in enumerate(features) if i not in held],
        [_without_origin(f) for i, f in enumerate(features) if i in held],
    )


def _without_origin(feature: Feature) -> Feature:
    return {k: v for k, v in feature.items() if k != "origin"}


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
