"""A model that continues batches of token ids, for `generate:` steps (self-replay).

Greedy through transformers' `generate`; sampling goes through `RowSampler`, a logits processor
with one torch.Generator per row, so a row's tokens depend on its own seed only, not on the
batch it landed in (transformers' sampling draws from one global generator per call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.recipe.model import Sampling
from lossless.training.self_replay import Messages, cut_at, nucleus_probs


class RowSampler:
    """A logits processor that samples each row with its own generator and leaves only the
    chosen token, so `generate(do_sample=False)` (greedy) takes exactly that token."""

    def __init__(self, seeds: Sequence[int], sampling: Sampling) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.sampling = sampling

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = nucleus_probs(scores, self.sampling.temperature, self.sampling.top_p).cpu()
        picks = torch.stack(
            [
                torch.multinomial(p, 1, generator=g)
                for p, g in zip(probs, self.generators, strict=True)
            ]
        ).to(scores.device)
        return torch.full_like(scores, float("-inf")).scatter(1, picks, 0.0)


@dataclass
class Generator:
    """A model and tokenizer that turn batches of token ids into decoded continuations."""

    model: Any
    tokenizer: Any
    pad_id: int

    def continue_ids(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        stop_ids: Sequence[int],
        sampling: Sampling | None = None,
        seeds: Sequence[int] = (),
    ) -> list[list[int]]:
        """New tokens after each prompt (left-padded into one batch), each cut before its first
        stop token. Greedy unless `sampling` (then one seed per row)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + list(p) for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=list(stop_ids),
            pad_token_id=self.pad_id,
        )
        processors = LogitsProcessorList([RowSampler(seeds, sampling)] if sampling else [])
        device = self.model.device
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=config,
                logits_processor=processors,
            )
        result = []
        for row in out[:, width:].tolist():
            stops = [i for i, t in enumerate(row) if t in stop_ids]
            result.append(row[: stops[0]] if stops else row)
        return result

    def decode(self, ids: Sequence[int], stop: str = "") -> str:
        """Text of `ids` before the first `stop` marker, special tokens removed, trailing
        whitespace stripped (leading whitespace is part of the answer: see `cut_at`).
        Decoded with its special tokens first, so a marker that is one is still seen."""
        text = cut_at(str(self.tokenizer.decode(list(ids), skip_special_tokens=False)), stop)
        for special in self.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return text.rstrip()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stop_ids(self, marker: str) -> list[int]:
        """eos, plus `marker` when it is one token (chatml's <|im_end|>, llama3's <|eot_id|>)."""
        ids = {self.tokenizer.eos_token_id}
        marker_ids = self.encode(marker) if marker.strip() else []
        if len(marker_ids) == 1:
            ids.add(marker_ids[0])
        return sorted(i for i in ids if i is not None)


def load_generator(model_dir: Path) -> Generator:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cuda = torch.cuda.is_available()
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype="auto" if cuda else torch.float32
    )
    model = model.to("cuda" if cuda else "cpu").eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise LosslessError(f"{model_dir}: the tokenizer has neither a pad nor an eos token")
    return Generator(model, tokenizer, int(pad))


def chat_renderer(tokenizer: Any, chat_template: str | None) -> Callable[..., str]:
    """`render(messages, add_generation_prompt=False)` with the step's template (a built-in
    name or Jinja), else the tokenizer's own, else chatml, as train steps render chat rows."""
    from lossless.merge.chat_templates import BUILTIN_TEMPLATES, resolve_chat_template

    template = (resolve_chat_template(chat_template) if chat_template else None) or getattr(
        tokenizer, "chat_template", None
    )
    template = template or BUILTIN_TEMPLATES["chatml"]

    def render(messages: Messages, add_generation_prompt: bool = False) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages,
                chat_template=template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        )

    return render
