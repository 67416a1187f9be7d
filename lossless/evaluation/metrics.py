"""Held-out scores of one model on one dataset: answer-token loss, perplexity, exact match.

Loss is the exact mean over every answer token of the dataset (sum of token NLLs / token count),
not a mean of batch means, so batch size and padding never change the number. Exact match greedily
generates from the prompt (left-padded batches) and compares with the reference answer after
dropping special tokens and normalising whitespace.

Generation budget: `max_new_tokens` when set; otherwise each example gets as many tokens as its
reference answer has, so a model that says the answer and then keeps talking still matches (set
`max_new_tokens` to demand that it stops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossless.training.datasets import Example

IGNORE = -100  # label of a token that is not scored (prompt, padding)
EXACT_MATCH_FORMATS = ("chat", "instruction", "completion")
ALL_METRICS = ("loss", "perplexity", "exact_match")

Progress = Callable[[int], None]  # called with the number of examples just finished


def normalise(text: str, special_tokens: Sequence[str] = ()) -> str:
    """`"  Paris<|im_end|>\\n"` → `"Paris"`: special tokens dropped, whitespace runs → one space."""
    for token in special_tokens:
        if token:
            text = text.replace(token, " ")
    return " ".join(text.split())


def loss_sums(
    model: Any, ids: list[list[int]], labels: list[list[int]], pad_id: int
) -> tuple[float, int]:
    """(sum of NLL over labelled tokens, number of labelled tokens) for one right-padded batch.

    Right padding keeps every real token's position and causal context unchanged, and padding is
    labelled IGNORE, so the sums equal those of each sequence run alone.
    """
    import torch

    width = max(len(row) for row in ids)
    device = model.device
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    target = torch.full((len(ids), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (row, lab) in enumerate(zip(ids, labels, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        target[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(row)] = 1
    with torch.no_grad():
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    # Token t predicts token t+1: drop the last logit and the first label. One row at a time in
    # fp32, so the upcast costs one sequence's logits (2048 × 152k vocab ≈ 1.2 GB), not a batch's.
    target = target[:, 1:].to(device)
    nll = 0.0
    for i, row in enumerate(ids):
        nll += float(
            torch.nn.functional.cross_entropy(
                logits[i, : len(row) - 1].float(),
                target[i, : len(row) - 1],
                ignore_index=IGNORE,
                reduction="sum",
            )
        )
    return nll, int((target != IGNORE).sum())


def generate(
    model: Any, prompts: list[list[int]], budgets: list[int], pad_id: int, stop_ids: set[int]
) -> list[list[int]]:
    """Greedy continuations of left-padded `prompts`, each cut at its own budget or first stop id."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        input_ids[i, width - len(prompt) :] = torch.tensor(prompt)
        mask[i, width - len(prompt) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max(budgets),
            do_sample=False,
            pad_token_id=pad_id,
        )
    results = []
    for row, budget in zip(out[:, width:].tolist(), budgets, strict=True):
        kept: list[int] = []
        for token in row[:budget]:
            if token in stop_ids:
                break
            kept.append(token)
        results.append(kept)
    return results


def score_examples(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    metrics: Sequence[str] = ALL_METRICS,
    batch_size: int = 8,
    max_len: int = 2048,
    max_new_tokens: int | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Scores of `model` on `examples`, e.g. {"loss": 2.31, "perplexity": 10.07, "exact_match": 0.4}.

    exact_match is computed only when asked for and the examples have a prompt to answer
    (chat/instruction/completion). Also returns the counts it rests on: `examples`, `tokens`.
    """
    import math

    from lossless.training.datasets import encode

    # Padding is masked out and labelled IGNORE, so any id works when a tokenizer has no pad token.
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    encoded = [encode(tokenizer, ex, max_len, loss_on="answer") for ex in examples]
    want_em = "exact_match" in metrics and bool(examples)
    want_em = want_em and all(ex.format in EXACT_MATCH_FORMATS for ex in examples)
    stop_ids = _stop_ids(model, tokenizer) | {pad_id}
    specials = list(getattr(tokenizer, "all_special_tokens", []))

    total_nll, total_tokens, matches = 0.0, 0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        ids = [list(map(int, row)) for row, _ in chunk]
        labels = [list(map(int, lab)) for _, lab in chunk]
        nll, count = loss_sums(model, ids, labels, pad_id)
        total_nll, total_tokens = total_nll + nll, total_tokens + count
        if want_em:
            batch = examples[start : start + batch_size]
            start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else pad_id
            prompts = [
                _prompt_ids(row, lab) or [start_id] for row, lab in zip(ids, labels, strict=True)
            ]
            budgets = [
                max_new_tokens
                or max(1, len(tokenizer(ex.answer, add_special_tokens=False).input_ids))
                for ex in batch
            ]
            outputs = generate(model, prompts, budgets, pad_id, stop_ids)
            for ex, out in zip(batch, outputs, strict=True):
                said = tokenizer.decode(out, skip_special_tokens=True)
                matches += normalise(said, specials) == normalise(ex.answer, specials)
        if progress:
            progress(len(chunk))

    scores: dict[str, float] = {"examples": float(len(examples)), "tokens": float(total_tokens)}
    mean = total_nll / total_tokens if total_tokens else math.nan
    if "loss" in metrics:
        scores["loss"] = mean
    if "perplexity" in metrics:
        scores["perplexity"] = math.exp(mean) if total_tokens else math.nan
    if want_em:
        scores["exact_match"] = matches / len(examples)
    return scores


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """Tokens that end an answer: the tokenizer's eos and the model's generation eos ids.

    generate() stops a row at any generation eos id but keeps that token in its output, and chat
    models list several (Qwen2-Instruct: <|im_end|> and <|endoftext|>), so all of them are cut.
    """
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def _prompt_ids(ids: list[int], labels: list[int]) -> list[int]:
    """The tokens before the first scored one: exactly the prompt the loss was measured after."""
    for i, label in enumerate(labels):
        if label != IGNORE:
            return ids[:i]  # [] when the answer starts at token 0 (nothing to prompt with)
    return ids
