"""Built-in chat templates and how a recipe's `chat_template:` value becomes a Jinja string.

A recipe says `chat_template: chatml` (a built-in name), `auto` (the template most inputs share,
as mergekit does) or a literal Jinja string. The result is written into the output's
`tokenizer_config.json`. Each template renders `messages` (role/content dicts) and honours
`add_generation_prompt` the way transformers' `apply_chat_template` passes it.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence

from lossless.errors import LosslessError

# Renders an empty string rather than "None" when the tokenizer has no BOS token.
_BOS = "{% if bos_token %}{{ bos_token }}{% endif %}"

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = (
    _BOS + "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# Mistral has no system role: a system message is prepended to the next user turn.
MISTRAL = (
    _BOS + "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}{% set ns.system = '' %}"
    "{% else %}{{ ' ' + message['content'] }}{% if eos_token %}{{ eos_token }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
)

ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{% else %}{{ '### Response:\\n' + message['content'] }}"
    "{% if eos_token %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)

EXAONE = (
    "{% for message in messages %}"
    "{{ '[|' + message['role'] + '|]' + message['content'] }}"
    "{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "alpaca": ALPACA,
    "exaone": EXAONE,
}


def is_jinja(value: str) -> bool:
    """A literal template rather than a name: it contains a Jinja tag or expression."""
    return "{%" in value or "{{" in value


def resolve_chat_template(value: str, input_templates: Sequence[str | None] = ()) -> str | None:
    """`chatml` → its Jinja; `auto` → the most common input template (None if none has one);
    a Jinja string → itself. Ties under `auto` go to the template seen first, so the choice
    follows the recipe's model order. Anything else is an error with a did-you-mean."""
    if is_jinja(value):
        return value
    if value == "auto":
        counts = Counter(t for t in input_templates if t)
        if not counts:
            return None
        return counts.most_common(1)[0][0]  # most_common keeps first-seen order among ties
    if value in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[value]
    choices = [*BUILTIN_TEMPLATES, "auto"]
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise LosslessError(
        f"unknown chat_template {value!r}",
        hint=f"{hint}use one of {', '.join(choices)}, or a Jinja template string",
    )
