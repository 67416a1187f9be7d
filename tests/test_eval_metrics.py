"""Eval metrics against direct computations with transformers on the same tiny model and data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.factories import make_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_model(Path(tmp_path_factory.mktemp("m")) / "llama", seed=3)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def direct_loss(model, rows: list[tuple[list[int], list[int]]]) -> tuple[float, int]:
    """Unpadded, one sequence at a time: sum of cross-entropy over labelled (answer) tokens."""
    total, count = 0.0, 0
    for ids, labels in rows:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        target = torch.tensor(labels[1:])
        keep = target != -100
        total += float(
            torch.nn.functional.cross_entropy(logits[:-1][keep], target[keep], reduction="sum")
        )
        count += int(keep.sum())
    return total, count


def test_loss_sums_padding_aware(tiny) -> None:
    from lossless.evaluation.metrics import loss_sums

    model, _ = tiny
    # Three sequences of different lengths; only the last 2, 3 and 1 tokens are "answer" tokens.
    ids = [[5, 9, 14, 20, 31], [7, 8, 40, 41, 42, 43, 44, 45], [12, 13]]
    labels = [[-100] * 3 + i[3:] for i in ids[:1]]
    labels += [[-100] * 5 + ids[1][5:], [-100, *ids[2][1:]]]
    got_sum, got_count = loss_sums(model, ids, labels, pad_id=2)
    want_sum, want_count = direct_loss(model, list(zip(ids, labels, strict=True)))
    assert got_count == want_count == 2 + 3 + 1
    assert got_sum == pytest.approx(want_sum, rel=1e-5)


def test_dataset_loss_and_perplexity_equal_direct_computation(tiny) -> None:
    from lossless.evaluation.metrics import score_examples
    from lossless.training.datasets import Example, encode

    model, tok = tiny
    examples = [
        Example("the cat sat on", " the mat", "completion"),
        Example("one plus two is", " three", "completion"),
        Example("hello world", " this is a tiny corpus for a tiny tokenizer", "completion"),
        Example("the dog", " ate the bone", "completion"),
        Example("reverse the words", " please", "completion"),
    ]
    scores = score_examples(model, tok, examples, metrics=("loss", "perplexity"), batch_size=2)
    total, count = direct_loss(model, [encode(tok, ex, 128, loss_on="answer") for ex in examples])
    # The exact per-token mean over the dataset, not a mean of per-batch means.
    assert scores["tokens"] == count
    assert scores["loss"] == pytest.approx(total / count, rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert "exact_match" not in scores
    # Batch size changes nothing.
    one = score_examples(model, tok, examples, metrics=("loss",), batch_size=5)
    assert one["loss"] == pytest.approx(scores["loss"], rel=1e-5)


def greedy(model, tok, example, n: int) -> str:
    """The model's own unbatched greedy continuation of `example`'s prompt, as text."""
    from lossless.training.datasets import encode

    ids, labels = encode(tok, example, 128, loss_on="answer")
    prompt = ids[: next(i for i, lab in enumerate(labels) if lab != -100)]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=2
        )
    new = []
    for token in out[0, len(prompt) :].tolist():
        if token in (tok.eos_token_id, tok.pad_token_id):
            break
        new.append(token)
    return tok.decode(new, skip_special_tokens=True)


def test_exact_match_of_own_greedy_output(tiny) -> None:
    from lossless.evaluation.metrics import score_examples
    from lossless.training.datasets import Example

    model, tok = tiny
    # Prompts of different lengths, so the batch is left-padded.
    prompts = ["the cat", "one plus two is three and", "hello"]
    own = [greedy(model, tok, Example(p, "x", "instruction"), 4) for p in prompts]
    assert all(own), own
    right = [
        Example(p, "  " + a + " ", "instruction") for p, a in zip(prompts, own, strict=True)
    ]  # spaces normalised
    wrong = [Example(p, a + " zebra", "instruction") for p, a in zip(prompts, own, strict=True)]
    kwargs = dict(metrics=("exact_match",), batch_size=3, max_new_tokens=4)
    assert score_examples(model, tok, right, **kwargs)["exact_match"] == 1.0
    assert score_examples(model, tok, wrong, **kwargs)["exact_match"] == 0.0
    mixed = [right[0], wrong[1], right[2]]
    assert score_examples(model, tok, mixed, **kwargs)["exact_match"] == pytest.approx(2 / 3)


def test_exact_match_budget_from_reference_length(tiny) -> None:
    from lossless.evaluation.metrics import score_examples
    from lossless.training.datasets import Example

    model, tok = tiny
    # Without max_new_tokens each example may generate as many tokens as its reference has:
    # the 3-token own output matches, even though the model would go on talking.
    prompts = ["reverse", "the cat"]
    own = [greedy(model, tok, Example(p, "x", "chat"), 3) for p in prompts]
    # Precondition: these outputs re-tokenise to 3 tokens (random byte-level BPE output need not:
    # a stray byte decodes to U+FFFD, which encodes to 3 tokens).
    assert [len(tok(a, add_special_tokens=False).input_ids) for a in own] == [3, 3]
    examples = [Example(p, a, "chat") for p, a in zip(prompts, own, strict=True)]
    assert score_examples(model, tok, examples, metrics=("exact_match",))["exact_match"] == 1.0
    # Given a larger fixed budget, the continuation past the reference makes it a mismatch.
    longer = score_examples(model, tok, examples, metrics=("exact_match",), max_new_tokens=12)
    assert longer["exact_match"] == 0.0


def test_no_exact_match_for_text(tiny) -> None:
    from lossless.evaluation.metrics import normalise, score_examples
    from lossless.training.datasets import Example

    model, tok = tiny
    scores = score_examples(model, tok, [Example("", "the cat sat on the mat", "text")])
    assert set(scores) == {"examples", "tokens", "loss", "perplexity"}
    assert normalise("  Paris<|im_end|>\n\t", ["<|im_end|>"]) == "Paris"


def test_generation_stops_at_the_models_eos_ids(tiny) -> None:
    from lossless.evaluation.metrics import score_examples
    from lossless.training.datasets import Example, encode

    model, tok = tiny
    ids, labels = encode(tok, Example("the cat", "x", "chat"), 128, loss_on="answer")
    prompt = ids[: next(i for i, lab in enumerate(labels) if lab != -100)]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=4, do_sample=False, pad_token_id=2
        )
    t1, t2, t3 = out[0, len(prompt) : len(prompt) + 3].tolist()
    assert t3 not in (t1, t2)  # precondition: the stop token is not said earlier
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [1, t3]  # like a chat model's [<|im_end|>, eos]
    try:
        two = Example("the cat", tok.decode([t1, t2], skip_special_tokens=True), "chat")
        kwargs = dict(metrics=("exact_match",), max_new_tokens=4)
        assert score_examples(model, tok, [two], **kwargs)["exact_match"] == 1.0
    finally:
        model.generation_config.eos_token_id = saved
