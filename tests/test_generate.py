"""generate: steps (self-replay) — template turns, the sampling maths, Magpie's prefix and parsing,
prompts answered once each, dedup and length counts, same seed → same bytes, and a recipe whose
`replay:` reads a generate step's rows, run end to end and fresh on a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.recipe.model import GenerateStep, LengthFilter, ModelRef, Sampling
from lossless.steps import generate
from lossless.steps.generate import run_generate
from lossless.training.datasets import detect_format, load_rows, to_examples
from lossless.training.generator import Generator, chat_renderer
from lossless.training.self_replay import (
    cut_at,
    normalised,
    nucleus_probs,
    prompt_messages,
    row_seed,
    template_turns,
)
from tests.factories import make_model, make_tokenizer, write_jsonl


@pytest.fixture(scope="module")
def instruct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose tokenizer knows chatml's <|im_start|> and <|im_end|> (ids 320, 321)."""
    root = tmp_path_factory.mktemp("generate")
    model = make_model(root / "instruct", layers=1, vocab_size=330, tokenizer=False)
    make_tokenizer(model, chatml=True)
    return model


def _step(**kw) -> GenerateStep:
    defaults = dict(
        name="rehearsal",
        model=ModelRef("instruct"),
        samples=6,
        chat_template="chatml",
        max_new_tokens=6,
        batch_size=4,
        magpie=Sampling(max_new_tokens=8),
    )
    return GenerateStep(**{**defaults, **kw})


def _run(step: GenerateStep, model: Path, out: Path, seed: int = 0) -> dict:
    return run_generate(
        step, model_dir=model, out_dir=out, recipe_dir=out.parent, seed=seed, quiet=True
    )


# ---- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prefix", "stop"),
    [
        ("chatml", "<|im_start|>user\n", "<|im_end|>"),
        ("llama3", "<s><|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
        ("mistral", "<s>[INST] ", "[/INST]"),
        ("alpaca", "### Instruction:\n", "\n\n"),
    ],
)
def test_template_turns_find_the_user_prefix(
    tmp_path: Path, name: str, prefix: str, stop: str
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(make_tokenizer(tmp_path / "tok"))
    turns = template_turns(chat_renderer(tokenizer, name))
    assert turns.user_prefix == prefix and turns.user_stop == stop


def test_template_that_rewrites_content_is_refused(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(make_tokenizer(tmp_path / "tok"))
    upper = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(LosslessError, match="where a user turn starts"):
        template_turns(chat_renderer(tokenizer, upper))


def test_nucleus_probs_closed_form() -> None:
    import torch

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.allclose(nucleus_probs(logits, 1.0, 0.6), torch.tensor([[0.625, 0.375, 0.0]]))
    assert torch.allclose(nucleus_probs(logits, 1.0, 1.0), torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.allclose(nucleus_probs(logits, 1.0, 0.1), torch.tensor([[1.0, 0.0, 0.0]]))
    # T = 0.5 squares the odds: 0.5² : 0.3² : 0.2² = 25 : 9 : 4.
    assert torch.allclose(nucleus_probs(logits, 0.5, 1.0), torch.tensor([[25, 9, 4]]) / 38.0)


def test_small_pure_helpers() -> None:
    assert cut_at(" hi there<|im_end|>\nmore", "<|im_end|>") == " hi there"  # own leading space
    assert cut_at("no marker ", "<|im_end|>") == "no marker"
    assert normalised(" a  b\n c ") == "a b c"
    assert row_seed(0, "magpie", 1) == row_seed(0, "magpie", 1) != row_seed(0, "magpie", 2)
    assert row_seed(0, "magpie", 1) != row_seed(1, "magpie", 1) != row_seed(0, "text", 1)
    assert LengthFilter(2, 4).keeps(" abc ") and not LengthFilter(2, 4).keeps("abcde")
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert prompt_messages(chat, "r") == [{"role": "user", "content": "q"}]
    assert prompt_messages({"prompt": "p"}, "r") == [{"role": "user", "content": "p"}]
    assert prompt_messages({"text": "t"}, "r") == [{"role": "user", "content": "t"}]
    with pytest.raises(LosslessError, match="no user turn"):
        prompt_messages({"messages": [{"role": "assistant", "content": "a"}]}, "r")
    with pytest.raises(LosslessError, match="cannot find a prompt"):
        prompt_messages({"answer": "a"}, "r")


# ---- on a tiny model -----------------------------------------------------------------------------


def test_same_seed_same_bytes_and_rows_read_as_chat(instruct: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    step = _step(text_samples=3, text=Sampling(max_new_tokens=8))
    first = _run(step, instruct, tmp_path / "a")
    _run(step, instruct, tmp_path / "b")
    other = _run(step, instruct, tmp_path / "c", seed=1)
    for name in ("data.jsonl", "text.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "data.jsonl").read_bytes() != (
        tmp_path / "c" / "data.jsonl"
    ).read_bytes()
    assert first["source"] == "magpie" and first["chat"]["kept"] == 6 == other["chat"]["kept"]
    saved = json.loads((tmp_path / "a" / "generate.json").read_text())
    assert saved["chat"] == first["chat"] and saved["text"]["kept"] == 3
    # The project's reader takes the rows as they are: chat rows and text rows.
    rows = load_rows(tmp_path / "a" / "data.jsonl")
    assert detect_format(rows, "data") == "chat"
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    tokenizer = AutoTokenizer.from_pretrained(instruct)
    examples = to_examples(rows, "chat", tokenizer, "chatml")
    assert examples[0].prompt.startswith("<|im_start|>user\n")
    assert detect_format(load_rows(tmp_path / "a" / "text.jsonl"), "text") == "text"


def test_batch_size_does_not_change_sampled_user_turns(instruct: Path, tmp_path: Path) -> None:
    """Each row's own generator: the user turns sampled do not depend on the batching."""
    _run(_step(batch_size=4), instruct, tmp_path / "four")
    _run(_step(batch_size=3), instruct, tmp_path / "three")
    users = [
        [r["messages"][0]["content"] for r in load_rows(tmp_path / d / "data.jsonl")]
        for d in ("four", "three")
    ]
    assert users[0] == users[1]


class Scripted:
    """Stands in for `Generator.continue_ids`: records each call, answers from a script."""

    def __init__(self, gen_texts: list[str], answer: str = "fine") -> None:
        self.calls: list[dict] = []
        self.user_texts = list(gen_texts)
        self.answer = answer

    def __call__(
        self, gen: Generator, prompts, *, max_new_tokens, stop_ids, sampling=None, seeds=()
    ):
        self.calls.append(
            {"prompts": [list(p) for p in prompts], "sampling": sampling, "seeds": list(seeds)}
        )
        if sampling is None:  # greedy: an answer per prompt
            return [gen.encode(self.answer + "<|im_end|>")[:-1] for _ in prompts]
        out = [gen.encode(self.user_texts.pop(0)) if self.user_texts else [] for _ in prompts]
        return out


def test_magpie_samples_from_the_user_prefix_and_parses_the_turn(
    instruct: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    script = Scripted(
        ["what is two<|im_end|>\nignored", "x", "what  is two", "tell me a story"] * 2
    )
    monkeypatch.setattr(Generator, "continue_ids", lambda self, p, **kw: script(self, p, **kw))
    step = _step(samples=2, batch_size=4, length=LengthFilter(min_chars=2))
    report = _run(step, instruct, tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(instruct)
    prefix = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    sampled = script.calls[0]
    assert sampled["sampling"] == step.magpie and sampled["prompts"] == [prefix] * 4
    assert sampled["seeds"] == [row_seed(0, "magpie", i) for i in range(4)]
    answered = script.calls[1]  # the two new user turns, answered in one greedy batch
    assert answered["sampling"] is None and len(answered["prompts"]) == 2 == len(script.calls)
    rendered = tokenizer.decode(answered["prompts"][0])
    assert rendered == "<|im_start|>user\nwhat is two<|im_end|>\n<|im_start|>assistant\n"
    rows = load_rows(tmp_path / "m" / "data.jsonl")
    assert [r["messages"][0]["content"] for r in rows] == ["what is two", "tell me a story"]
    assert rows[0]["messages"][1] == {"role": "assistant", "content": "fine"}
    # "x" is too short; "what  is two" is "what is two" up to whitespace.
    c = report["chat"]
    assert (c["sampled"], c["filtered"], c["duplicates"], c["kept"]) == (4, 1, 1, 2)
    assert report["turns"]["user_prefix"] == "<|im_start|>user\n"


def test_answers_filtered_by_length_are_counted(
    instruct: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Scripted([f"question {i}" for i in range(40)], answer="a long answer")
    monkeypatch.setattr(Generator, "continue_ids", lambda self, p, **kw: script(self, p, **kw))
    report = _run(_step(samples=3, length=LengthFilter(1, 5)), instruct, tmp_path / "f")
    c = report["chat"]
    # Every answer is too long: 4 × 3 tries, all filtered, none kept.
    assert (c["sampled"], c["filtered"], c["kept"]) == (12, 12, 0)
    assert (tmp_path / "f" / "data.jsonl").read_text() == ""


def test_prompts_are_each_answered_once(instruct: Path, tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"prompt": "the cat sat"},
            {"messages": [{"role": "user", "content": "hello world"}]},
            {"prompt": "the  cat sat"},  # a duplicate up to whitespace
            {"prompt": "one plus two"},
        ],
    )
    report = _run(
        _step(prompts=str(tmp_path / "prompts.jsonl"), samples=None), instruct, tmp_path / "p"
    )
    rows = load_rows(tmp_path / "p" / "data.jsonl")
    assert [r["messages"][0]["content"] for r in rows] == [
        "the cat sat",
        "hello world",
        "one plus two",
    ]
    assert all(r["messages"][1]["role"] == "assistant" for r in rows)
    c = report["chat"]
    assert report["source"] == "prompts" and (c["sampled"], c["duplicates"]) == (4, 1)
    assert c["kept"] + c["filtered"] == 3
    (tmp_path / "prompts.txt").write_text("first prompt\nsecond prompt\nthird prompt\n")
    _run(_step(prompts=str(tmp_path / "prompts.txt"), samples=2), instruct, tmp_path / "t")
    assert len((tmp_path / "t" / "data.jsonl").read_text().splitlines()) <= 2


# ---- in a recipe ---------------------------------------------------------------------------------

RECIPE = """\
generate:
  rehearsal:
    model: ./instruct
    samples: 4
    chat_template: chatml
    max_new_tokens: 4
    seed: {seed}
    magpie: {{max_prompt_tokens: 6}}
train:
  skill:
    base: ./instruct
    data: new.jsonl
    max_steps: 2
    batch_size: 4
    chat_template: chatml
    replay: {{data: rehearsal, fraction: 0.5}}
"""


def test_replay_of_a_generate_step_runs_end_to_end_and_is_fresh_after(
    instruct: Path, tmp_path: Path
) -> None:
    import shutil

    from lossless.commands.plan import describe_plan
    from lossless.engine.lockfile import recipe_inputs
    from lossless.engine.runner import Runner, RunOptions
    from lossless.recipe.graph import build_graph
    from lossless.validation.recipe_check import load_recipe

    shutil.copytree(instruct, tmp_path / "instruct")
    write_jsonl(
        tmp_path / "new.jsonl", [{"prompt": f"add {i}:", "completion": f" {i}"} for i in range(4)]
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(seed=0))
    recipe, _ = load_recipe(path)
    assert ("rehearsal", "skill") in build_graph(recipe).edges
    assert "rehearsal" not in {i.ref for i in recipe_inputs(recipe)}  # a step, not a lock entry
    plan = {row["name"]: row for row in describe_plan(recipe)}
    assert plan["rehearsal"]["kind"] == "generate" and plan["skill"]["needs"] == ["rehearsal"]
    options = RunOptions(work_dir=tmp_path / "work", quiet=True)
    first = Runner(recipe, options).run()
    assert [(s.name, s.state) for s in first] == [("rehearsal", "ran"), ("skill", "ran")]
    data = tmp_path / "work" / "rehearsal" / "data.jsonl"
    assert len(load_rows(data)) == 4
    metrics = json.loads((tmp_path / "work" / "skill" / "metrics.json").read_text())
    assert metrics["examples"] == 4 + 2  # the new rows and half as many replayed
    again = Runner(recipe, options).run()
    assert [s.state for s in again] == ["fresh", "fresh"]
    # Another seed: new rehearsal rows, so the training that reads them is stale too.
    path.write_text(RECIPE.format(seed=1))
    recipe, _ = load_recipe(path)
    stale = [Runner(recipe, options).status(s) for s in recipe.steps]
    assert [s.state for s in stale] == ["stale", "stale"]
    assert "step:rehearsal: changed" in stale[1].reasons


def test_handlers_cover_generate() -> None:
    from lossless.steps import HANDLERS

    assert HANDLERS["generate"].run is generate.run


def test_data_keys_naming_a_generate_step_become_its_files() -> None:
    from lossless.engine.resolver import Resolver, with_data_files
    from lossless.recipe.build import build_recipe

    doc = {
        "generate": {"r": {"model": "org/i", "samples": 4, "text": {"samples": 2}}},
        "train": {
            "t": {
                "base": "org/i",
                "data": ["new.jsonl", "r", "more.jsonl"],
                "replay": {"data": "r"},
                "ewc": {"data": {"path": "r"}},
            }
        },
        "eval": {"e": {"models": ["org/i"], "data": {"old": "r", "new": "new.jsonl"}}},
    }
    recipe = build_recipe("/w/recipe.yaml", [doc])
    resolver = Resolver(recipe, step_dirs={"r": Path("/w/r")})
    chat, text = "/w/r/data.jsonl", "/w/r/text.jsonl"
    train = with_data_files(recipe.step("t"), resolver)
    assert train.block["data"] == ["new.jsonl", chat, text, "more.jsonl"]
    assert [d.path for d in train.settings.data] == ["new.jsonl", chat, text, "more.jsonl"]
    assert train.block["replay"] == {"data": [chat, text]}
    assert train.block["ewc"] == {"data": {"path": chat}}  # one file: the chat rows
    evaluation = with_data_files(recipe.step("e"), resolver)
    assert evaluation.data == {"old": chat, "new": "new.jsonl"}
    assert recipe.step("t").block["data"][1] == "r"  # the recipe itself is untouched
