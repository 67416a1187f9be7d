"""Extra loss terms added to trl's SFTTrainer cross-entropy: EWC's penalty, distillation's KL.

A term is any object with a `name` and `__call__(model, batch, outputs) -> tensor` (the
`LossTerm` protocol); `trainer_class(terms)` is the one SFTTrainer subclass that adds them all,
so EWC and distillation compose without a class per combination. The batch a term sees is the
collated one (input_ids, labels, attention_mask) plus `replay` (1 for a replayed old row),
which the model itself never receives.

SFTTrainer's loss runs a fused LM head that never builds the [batch, seq, vocab] logits (less
memory, and faster). A term that reads the logits says so with `needs_logits = True`
(distillation compares them with the teacher's); for it the step takes transformers' plain
forward and cross-entropy instead, which give the same loss value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class LossTerm(Protocol):
    name: str

    def __call__(self, model: Any, batch: dict[str, Any], outputs: Any) -> Any: ...


@dataclass
class EwcTerm:
    """λ/2 · Σ F·(θ − θ₀)² (`training/ewc.py`) over the parameters the Fisher covers."""

    fisher: dict[str, Any]
    anchor: dict[str, Any]
    lam: float
    name: str = "ewc"
    needs_logits: bool = False

    def __call__(self, model: Any, batch: dict[str, Any], outputs: Any) -> Any:
        import torch

        from lossless.training.ewc import ewc_penalty

        return torch.as_tensor(ewc_penalty(model, self.fisher, self.anchor, self.lam))


def trainer_class(terms: Sequence[LossTerm]) -> type:
    """An SFTTrainer whose loss is its cross-entropy plus every term; each term's values (one per
    micro-batch) land in `trainer.term_values[name]`. Overriding compute_loss is the one place
    the trainer lets the loss depend on the parameters or on a second model (a collator or a
    callback cannot), so this subclass is the only one."""
    from transformers import Trainer
    from trl import SFTTrainer

    logits = any(getattr(t, "needs_logits", False) for t in terms)

    class TermsTrainer(SFTTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.term_values: dict[str, list[float]] = {t.name: [] for t in terms}

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            replay = inputs.pop("replay", None)  # a row mark for the terms, not a model input
            if not terms:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            batch = {**inputs, "replay": replay}  # before super(), which may pop the labels
            if logits:  # transformers' forward with logits; SFTTrainer's fused head has none
                loss, outputs = Trainer.compute_loss(self, model, inputs, True, num_items_in_batch)
            else:
                loss, outputs = super().compute_loss(model, inputs, False, num_items_in_batch), None
            for term in terms:
                value = term(model, batch, outputs)
                self.term_values[term.name].append(float(value.detach()))
                loss = loss + value
            return (loss, outputs) if return_outputs else loss

    return TermsTrainer
