"""Generate the quickstart's tiny world: deterministic data for four skills (run: python make_data.py).

- P (pretraining, raw text): word lists, counting and alphabet runs, and two operations written
  out as plain text, e.g. "words sun cat dog", "count 3 5 7 9", "letters c d e f",
  "the last of sun cat dog is dog", "sun cat swapped is cat sun".
- A (chat): the last word.                   user "last: sun cat dog"   → "dog"
- B (chat): swap two words.                  user "swap: sun cat"       → "cat sun"
- C (chat, the new skill): the first word.   user "first: sun cat dog"  → "sun"
As in real models, A and B rest on what pretraining taught (the words, the operations as text):
the instruct step teaches the model to answer with them. C is in neither model's data. Each skill
has a training file and a disjoint held-out file; the same seed gives the same bytes.
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


def chat(prompt: str, answer: str) -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    }


def chatml_text(run: str) -> str:
    """A pretraining line as a ChatML exchange: the user gives the start, the assistant the rest."""
    words = run.split()
    head, tail = " ".join(words[:3]), " ".join(words[3:])
    return (
        f"<|im_start|>user\ncontinue: {head}<|im_end|>\n<|im_start|>assistant\n{tail}<|im_end|>\n"
    )


def skill_p(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:  # word lists: the base learns the words that A, B and C are about
        return "words " + " ".join(rng.sample(WORDS, rng.randint(3, 5)))
    if kind < 0.45:  # the operations behind skills A and B, as plain text (not C's)
        words = rng.sample(WORDS, rng.randint(2, 4))
        return f"the last of {' '.join(words)} is {words[-1]}"
    if kind < 0.6:
        first, second = rng.sample(WORDS, 2)
        return f"{first} {second} swapped is {second} {first}"
    if kind < 0.85:  # counting by ones or twos: 90 starts × 2 steps × 3 lengths
        start, step = rng.randint(0, 89), rng.choice((1, 2))
        numbers = range(start, start + step * rng.randint(4, 6), step)
        return "count " + " ".join(str(n) for n in numbers)
    start = rng.randint(0, 20)
    return "letters " + " ".join(LETTERS[start : start + rng.randint(3, 5)])


def skill_a(rng: random.Random) -> dict:
    words = rng.sample(WORDS, rng.randint(2, 4))
    return chat("last: " + " ".join(words), words[-1])


def skill_b(rng: random.Random) -> dict:
    first, second = rng.sample(WORDS, 2)
    return chat(f"swap: {first} {second}", f"{second} {first}")


def skill_c(rng: random.Random) -> dict:
    words = rng.sample(WORDS, rng.randint(2, 4))
    return chat("first: " + " ".join(words), words[0])


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
    p_train, p_held = split(skill_p, rng, 600, 60)
    (out_dir / "p_train.txt").write_text("\n".join(p_train) + "\n")
    # Real base models have seen chat markup in their pretraining text; so does ours, on skill P
    # only ("continue" a run), as raw text: the base learns the markup, not skills A, B or C.
    write_jsonl(out_dir / "p_chat_train.jsonl", [{"text": chatml_text(t)} for t in p_train])
    (out_dir / "p_heldout.txt").write_text("\n".join(p_held) + "\n")
    for name, make, n_train, n_held in (
        ("a", skill_a, 800, 60),
        ("b", skill_b, 600, 60),
        ("c", skill_c, 800, 60),
    ):
        train, held = split(make, rng, n_train, n_held)
        write_jsonl(out_dir / f"{name}_train.jsonl", train)
        write_jsonl(out_dir / f"{name}_heldout.jsonl", held)
    # The tokenizer is trained on everything the models will ever see, held-out sets included,
    # so no skill is unreadable; this is vocabulary, not knowledge.
    corpus = [
        *p_train,
        *p_held,
        *WORDS,
        *(str(n) for n in range(20)),
        "last: swap: first:",
    ]
    (out_dir / "tokenizer_corpus.txt").write_text("\n".join(corpus) + "\n")


if __name__ == "__main__":
    main()
