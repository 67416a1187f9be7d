"""Built-in chat templates render through transformers; `auto` and names resolve as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.merge.chat_templates import BUILTIN_TEMPLATES, resolve_chat_template
from tests.factories import make_tokenizer

CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "bye"},
]
# Exact renderings with add_generation_prompt=True (bos "<s>", eos "</s>").
EXPECTED = {
    "chatml": "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nbye<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "<s>[INST] be brief\n\nhi [/INST] hello</s>[INST] bye [/INST]",
    "alpaca": "be brief\n\n### Instruction:\nhi\n\n### Response:\nhello</s>\n\n"
    "### Instruction:\nbye\n\n### Response:\n",
    "exaone": "[|system|]be brief[|endofturn|]\n[|user|]hi\n[|assistant|]hello[|endofturn|]\n"
    "[|user|]bye\n[|assistant|]",
}


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_renders_with_transformers(name: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tokenizer(tmp_path, chatml=True))
    template = resolve_chat_template(name)
    text = tok.apply_chat_template(
        CHAT, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    assert text == EXPECTED[name]
    without = tok.apply_chat_template(CHAT[:3], chat_template=template, tokenize=False)
    assert "bye" not in without and "hello" in without


def test_auto_picks_the_most_shared_template() -> None:
    assert resolve_chat_template("auto", [None, "{{a}}", "{{b}}", "{{b}}"]) == "{{b}}"
    assert resolve_chat_template("auto", ["{{a}}", "{{b}}"]) == "{{a}}"  # tie: first seen
    assert resolve_chat_template("auto", [None, None]) is None


def test_literal_jinja_and_unknown_names() -> None:
    assert resolve_chat_template("{% for m in messages %}{{ m }}{% endfor %}").startswith("{%")
    with pytest.raises(LosslessError, match="unknown chat_template 'chatm'") as info:
        resolve_chat_template("chatm")
    assert "did you mean 'chatml'" in str(info.value)
