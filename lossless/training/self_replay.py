"""Self-replay, the pure parts: where a chat template's turns are, prompts rows, the sampling
maths and the yield of a `generate:` step (steps/generate.py runs the model).

Magpie (Xu et al., 2024) samples a user turn from the template's user-turn prefix alone; these
functions find that prefix, cut sampled text at end-of-turn markers, seed each row on its own and
count what was kept. No model here: everything is tested on strings and tiny tensors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lossless.errors import LosslessError

SENTINELS = ("lossless-turn-a", "lossless-turn-b")  # contents used to locate a template's turns

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Turns:
    """Where a chat template's turns start and end, found by rendering sentinel contents.

    chatml: user_prefix "<|im_start|>user\\n", user_end "<|im_end|>\\n", answer_end
    "<|im_end|>\\n". `*_stop` is the marker a sampled turn is cut at (the end, whitespace stripped).
    """

    user_prefix: str
    user_end: str
    answer_end: str

    @property
    def user_stop(self) -> str:
        return self.user_end.strip() or self.user_end

    @property
    def answer_stop(self) -> str:
        return self.answer_end.strip() or self.answer_end


def template_turns(render: Callable[[Messages], str]) -> Turns:
    """`render(messages)` is the template without a generation prompt. A user turn is rendered
    with two different contents: what precedes and follows them must agree, or the template
    rewrites its content (or depends on it) and its prefix cannot be trusted."""
    parts: list[tuple[str, ...] | None] = []
    for sentinel in SENTINELS:
        text = render([{"role": "user", "content": sentinel}])
        parts.append(tuple(text.split(sentinel)) if text.count(sentinel) == 1 else None)
    if parts[0] is None or parts[0] != parts[1]:
        raise LosslessError(
            "cannot find where a user turn starts in the chat template (it does not render a "
            "user message's content verbatim)",
            hint="give `prompts:` (prompts without answers), or a `chat_template:` like chatml",
        )
    prefix, user_end = parts[0]
    if not prefix:
        raise LosslessError(
            "the chat template puts nothing before a user turn: there is no prefix to sample from",
            hint="give `prompts:` (prompts without answers), or a `chat_template:` like chatml",
        )
    a, b = SENTINELS
    both = render([{"role": "user", "content": a}, {"role": "assistant", "content": b}])
    answer_end = both.split(b, 1)[1] if both.count(b) == 1 else ""
    return Turns(prefix, user_end, answer_end)


def prompt_messages(row: dict[str, Any], where: str) -> Messages:
    """A prompts row → the conversation to answer: {"prompt"}, {"text"} (a .txt line), or
    {"messages"} up to its last user turn (a chat row's answer is dropped and written anew)."""
    if isinstance(row.get("messages"), list):
        messages = row["messages"]
        for j, m in enumerate(messages):
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise LosslessError(
                    f"{where}: messages[{j}] needs string fields 'role' and 'content'"
                )
        last = max((j for j, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is None:
            raise LosslessError(f"{where}: 'messages' has no user turn to answer")
        return [{"role": m["role"], "content": m["content"]} for m in messages[: last + 1]]
    for key in ("prompt", "text", "instruction"):
        if isinstance(row.get(key), str):
            return [{"role": "user", "content": row[key]}]
    raise LosslessError(
        f"{where}: cannot find a prompt in fields {sorted(row)}",
        hint='rows need {"prompt": ...} or {"messages": [user turn(s)]}; .txt: one per line',
    )


def cut_at(text: str, stop: str) -> str:
    """The text before the first `stop` marker, trailing whitespace stripped (" hi\n<|im_end|>x"
    → " hi"). Leading whitespace is the model's own: byte-level tokenizers spell " dog" and
    "dog" with different tokens, so stripping it would rehearse answers the model never gives."""
    if stop and stop in text:
        text = text[: text.index(stop)]
    return text.rstrip()


def normalised(text: str) -> str:
    """Dedup key: runs of whitespace as one space ("a  b\\n" and "a b" are duplicates)."""
    return " ".join(text.split())


def row_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed per (run seed, stream, row): rows never share a random stream."""
    raw = hashlib.sha256(f"{seed}:{stream}:{index}".encode()).digest()
    return int.from_bytes(raw[:8], "little") >> 1


def nucleus_probs(logits: Any, temperature: float, top_p: float) -> Any:
    """Rows of logits → sampling probabilities: softmax(logits / T), then only the smallest set
    of tokens whose probability reaches top_p (always at least the most likely one), renormalised.
    E.g. probs [0.5, 0.3, 0.2] with top_p 0.6 → [0.625, 0.375, 0]."""
    import torch

    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above
    sorted_probs[before >= top_p] = 0.0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


@dataclass
class Yield:
    """What happened to every sampled row: a duplicate, filtered by length, kept, or surplus."""

    target: int
    sampled: int = 0
    duplicates: int = 0
    filtered: int = 0
    surplus: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    @property
    def done(self) -> bool:
        return len(self.rows) >= self.target

    def new(self, key: str) -> bool:
        """Count a sampled row; False (and counted) when its dedup key was seen already."""
        self.sampled += 1
        if normalised(key) in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(normalised(key))
        return True

    def keep(self, row: dict[str, Any]) -> None:
        if self.done:
            self.surplus += 1
        else:
            self.rows.append(row)

    def counts(self) -> dict[str, int]:
        return {
            "sampled": self.sampled,
            "duplicates": self.duplicates,
            "filtered": self.filtered,
            "surplus": self.surplus,
            "kept": len(self.rows),
            "target": self.target,
        }


def batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))
