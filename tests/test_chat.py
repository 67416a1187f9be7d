"""`lossless chat`: one-shot answers equal a plain greedy `generate`; the loop ends on `exit`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from lossless import cli
from lossless.merge.chat_templates import CHATML
from tests.factories import make_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("chat") / "model", seed=5)


def greedy_reference(model_dir: Path, messages: list[dict[str, str]], new_tokens: int) -> str:
    """What the answer must be: ChatML (the tokenizer has no template), greedy, decoded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(
        messages, chat_template=CHATML, add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(
            ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=1, pad_token_id=2
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_one_shot_prompt_prints_the_greedy_answer(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["chat", str(model_dir), "--system", "be brief", "--prompt", "the cat"]
    assert cli.main([*argv, "--max-new-tokens", "6"]) == 0
    answer = capsys.readouterr().out
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat"}]
    expected = greedy_reference(model_dir, messages, 6)
    assert expected.strip()
    assert answer == expected + "\n"
    assert cli.main([*argv, "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == answer  # deterministic


def test_interactive_loop_answers_until_exit(
    model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("the dog\nexit\nnever asked\n"))
    assert cli.main(["chat", str(model_dir), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    expected = greedy_reference(model_dir, [{"role": "user", "content": "the dog"}], 4)
    assert out == "> " + expected + "\n> "


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert cli.main(["chat", str(tmp_path / "empty"), "--prompt", "hi"]) == 1
    assert "config.json is missing" in capsys.readouterr().err


def test_chat_on_an_adapter_dir_answers_as_base_plus_adapter(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.factories import make_lora_adapter

    adapter = make_lora_adapter(model_dir, tmp_path / "adapter", seed=3)
    assert cli.main(["chat", str(adapter), "--prompt", "the cat", "--max-new-tokens", "6"]) == 0
    answer = capsys.readouterr().out
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter)
    merged.merge_and_unload().save_pretrained(tmp_path / "merged")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "merged" / name).write_bytes((model_dir / name).read_bytes())
    expected = greedy_reference(tmp_path / "merged", [{"role": "user", "content": "the cat"}], 6)
    plain = greedy_reference(model_dir, [{"role": "user", "content": "the cat"}], 6)
    assert answer == expected + "\n"
    assert expected != plain  # the adapter changes the answer, so the test can tell


def test_chat_on_a_recipes_lora_step_uses_that_steps_base(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from tests.factories import write_jsonl

    shutil.copytree(model_dir, tmp_path / "base")
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    ]
    write_jsonl(tmp_path / "data.jsonl", rows * 8)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "train:\n  skill:\n    base: ./base\n    method: lora\n    data: data.jsonl\n"
        "    max_steps: 2\n    learning_rate: 0.05\n    lora: {r: 4, alpha: 8}\n"
    )
    assert cli.main(["run", str(recipe), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["chat", f"{recipe}:skill", "--prompt", "hi", "--max-new-tokens", "4"]) == 0
    answer = capsys.readouterr().out
    adapter = tmp_path / ".lossless" / "r" / "skill"
    assert (adapter / "adapter_config.json").is_file()
    assert cli.main(["chat", str(adapter), "--prompt", "hi", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == answer  # the step's base, found through the recipe
