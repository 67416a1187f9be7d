"""Generate the quickstart's tiny world: deterministic data for four skills (run: python make_data.py).

- P (pretraining, raw text): word lists, counting and alphabet runs, and the three operations
  behind A, B and C written out as plain text, e.g. "words sun cat dog", "count 3 5 7 9",
  "letters c d e f", "the last of sun cat dog is dog", "sun cat swapped is cat sun",
  "after 3 5 7 comes 9".
- A (chat): the last word.                   user "last: sun cat dog"   → "dog"
- B (chat): swap two words.                  user "swap: sun cat"       → "cat sun"
- C (chat, the new skill): the next number.  user "next: 3 5 7"         → "9"
As in real models, every skill rests on what pretraining taught (the words, the runs, the
operations as text): the instruct step teaches the model to answer A and B, and the new skill's
fine-tune teaches a behaviour (answer C in chat), not a new ability. C's input is numbers and its
answer a number, so it does not compete with A and B (word lists in, words out). Each skill has a
training file and a disjoint held-out file of 200 items; the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    "sun",
    "cat",
    "dog",
    "red",
    "blue",
    "tree",
    "fish",
    "bird",
    "moon",
    "star",
    "rain",
    "snow",
    "car",
    "boat",
    "hat",
    "cup",
    "pen",
    "box",
    "egg",
    "map",
    "key",
    "owl",
    "fox",
    "bee",
    "ant",
    "cow",
    "pig",
]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
HERE = Path(__file__).resolve().parent
HELDOUT = 200  # held-out items per skill


def chat(prompt: str, answer: str) -> dict:
    """A user/assistant exchange. The answer starts with a space, as it would in running text: a
    byte-level BPE spells " dog" as one token and "dog" as two others ("d", "og"), and the chat
    answer is tokenised on its own, so without the space the answer would be in tokens that the
    base never learned to say."""
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": " " + answer},
        ]
    }


def chatml_text(run: str) -> str:
    """A pretraining line as a ChatML exchange: the user gives the start, the assistant the rest."""
    words = run.split()
    head, tail = " ".join(words[:3]), " ".join(words[3:])
    return (
        f"<|im_start|>user\ncontinue: {head}<|im_end|>\n<|im_start|>assistant\n {tail}<|im_end|>\n"
    )


def skill_p(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.2:  # word lists: the base learns the words that A and B are about
        return "words " + " ".join(rng.sample(WORDS, rng.randint(3, 5)))
    if kind < 0.35:  # the operations behind skills A, B and C, as plain text
        words = rng.sample(WORDS, rng.randint(2, 4))
        return f"the last of {' '.join(words)} is {words[-1]}"
    if kind < 0.5:
        first, second = rng.sample(WORDS, 2)
        return f"{first} {second} swapped is {second} {first}"
    if kind < 0.65:
        numbers = run(rng, rng.randint(3, 5))
        return f"after {' '.join(numbers[:-1])} comes {numbers[-1]}"
    if kind < 0.9:  # counting runs: 90 starts × 2 steps × 3 lengths
        return "count " + " ".join(run(rng, rng.randint(4, 6)))
    start = rng.randint(0, 20)
    return "letters " + " ".join(LETTERS[start : start + rng.randint(3, 5)])


def run(rng: random.Random, length: int) -> list[str]:
    """A counting run: `length` numbers from a start below 90, by ones or twos (all below 100)."""
    start, step = rng.randint(0, 89), rng.randint(1, 2)
    return [str(start + step * i) for i in range(length)]


def skill_a(rng: random.Random) -> dict:
    words = rng.sample(WORDS, rng.randint(2, 4))
    return chat("last: " + " ".join(words), words[-1])


def skill_b(rng: random.Random) -> dict:
    first, second = rng.sample(WORDS, 2)
    return chat(f"swap: {first} {second}", f"{second} {first}")


def skill_c(rng: random.Random) -> dict:
    numbers = run(rng, rng.randint(3, 5))
    return chat("next: " + " ".join(numbers[:-1]), numbers[-1])


def split(make, rng: random.Random, n_train: int, n_heldout: int) -> tuple[list, list]:
    """Draw distinct examples; held-out ones never appear in training."""
    seen: dict[str, object] = {}
    while len(seen) < n_train + n_heldout:
        item = make(rng)
        seen.setdefault(json.dumps(item), item)
    items = list(seen.values())
    return items[:n_train], items[n_train:]


def write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(out_dir: Path = HERE / "data", seed: int = 0) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    p_train, p_held = split(skill_p, rng, 1000, HELDOUT)
    (out_dir / "p_train.txt").write_text("\n".join(p_train) + "\n")
    # Real base models have seen chat markup in their pretraining text; so does ours, on skill P
    # only ("continue" a run), as raw text: the base learns the markup, not skills A, B or C.
    # One line in three is enough to learn the markup.
    write_jsonl(out_dir / "p_chat_train.jsonl", [{"text": chatml_text(t)} for t in p_train[::3]])
    (out_dir / "p_heldout.txt").write_text("\n".join(p_held) + "\n")
    used: set[str] = set()
    for name, make, n_train, n_held in (
        ("a", skill_a, 800, HELDOUT),
        ("b", skill_b, 300, HELDOUT),  # 702 ordered pairs in all: 202 left for prompts
        ("c", skill_c, 340, HELDOUT),  # 540 runs in all
    ):
        train, held = split(make, rng, n_train, n_held)
        write_jsonl(out_dir / f"{name}_train.jsonl", train)
        write_jsonl(out_dir / f"{name}_heldout.jsonl", held)
        used.update(row["messages"][0]["content"] for row in train + held)
    # Prompts without answers for self-replay: requests of the kinds the instruct model serves
    # (A and B), as a user of someone else's instruct model could write them. None is in any A/B
    # file, so replaying the instruct model's own answers to them uses none of its training data
    # and none of the held-out items.
    prompts: dict[str, None] = {}
    for make, n in ((skill_a, 300), (skill_b, 150)):
        start = len(prompts)
        while len(prompts) - start < n:
            user = make(rng)["messages"][0]["content"]
            if user not in used:
                prompts.setdefault(user, None)
    write_jsonl(
        out_dir / "old_prompts.jsonl",
        [{"messages": [{"role": "user", "content": u}]} for u in prompts],
    )
    # The tokenizer is trained on everything the models will ever see, held-out sets included,
    # so no skill is unreadable; this is vocabulary, not knowledge.
    corpus = [
        *p_train,
        *p_held,
        *WORDS,
        *(str(n) for n in range(100)),
        "last: swap: next:",
    ]
    (out_dir / "tokenizer_corpus.txt").write_text("\n".join(corpus) + "\n")


if __name__ == "__main__":
    main()
