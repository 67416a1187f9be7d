"""`distill: {model, weight, temperature}` — learning without forgetting: while the step learns
its new data, the replayed old rows are also pulled toward a teacher's next-token distributions.

term = weight · T² · KL(p_teacher(·/T) ‖ p_student(·/T)), averaged over the supervised positions
(labels ≠ -100) of the replay rows, or of every row when the step has no `replay:`. T² keeps the
gradient's size independent of T (Hinton et al. 2015): e.g. weight 1, T 2 → 4 · KL.

The teacher is loaded once, frozen, in eval mode and the student's dtype; when it is the very
base the step trains an adapter on, no second copy is loaded: the student's own forward with
the adapter switched off (peft's `disable_adapter`) gives the base's logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.training.settings import DistillSettings

Teacher = Callable[[dict[str, Any]], Any]  # collated batch → logits [batch, seq, vocab]


def distill_kl(
    student_logits: Any, teacher_logits: Any, labels: Any, rows: Any, temperature: float
) -> Any:
    """Mean KL(p_t ‖ p_s) of the T-softened next-token distributions over supervised positions
    of the selected rows; 0 when none. Position t predicts token t+1, so logits[:, :-1] pair
    with labels[:, 1:]. Student logits may be longer (prompt tuning prepends virtual tokens):
    their last seq positions are the real ones."""
    import torch

    seq = labels.shape[1]
    student = student_logits[:, -seq:][:, :-1].float() / temperature
    teacher = teacher_logits[:, -seq:][:, :-1].float() / temperature
    log_p_teacher = torch.log_softmax(teacher, dim=-1)
    log_p_student = torch.log_softmax(student, dim=-1)
    per_position = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    mask = (labels[:, 1:] != -100) & rows.bool()[:, None]
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class DistillTerm:
    """The loss term (`loss_terms.LossTerm`); `kl_values` keeps the unweighted KL per batch.
    A batch has `replay` marks when the step mixes in replay rows; without them every row
    is distilled."""

    teacher: Teacher
    weight: float
    temperature: float
    name: str = "distill"
    needs_logits: bool = True  # loss_terms: the plain forward, not SFTTrainer's fused LM head
    kl_values: list[float] = field(default_factory=list)

    def __call__(self, model: Any, batch: dict[str, Any], outputs: Any) -> Any:
        import torch

        labels = batch["labels"]
        rows = batch.get("replay")
        if rows is None:
            rows = torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
        if not rows.any():
            self.kl_values.append(0.0)  # no replay row in this batch: nothing to hold on to
            return outputs.logits.new_zeros(())
        kl = distill_kl(outputs.logits, self.teacher(batch), labels, rows, self.temperature)
        self.kl_values.append(float(kl.detach()))
        return self.weight * self.temperature**2 * kl


def adapter_off_teacher(peft_model: Any) -> Teacher:
    """The base's logits from the student itself, its adapter disabled: no second copy."""

    def teacher(batch: dict[str, Any]) -> Any:
        import torch

        was_training = peft_model.training
        peft_model.eval()
        try:
            with torch.no_grad(), peft_model.disable_adapter():
                return peft_model(
                    input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
                ).logits
        finally:
            peft_model.train(was_training)

    return teacher


def loaded_teacher(model_dir: Path, student: Any) -> Teacher:
    """A frozen copy of the model in `model_dir`, in the student's dtype, on the batch's device."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = next(p.dtype for p in student.parameters() if p.is_floating_point())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    model.requires_grad_(False)
    want = student.get_output_embeddings().weight.shape[0]
    got = model.get_output_embeddings().weight.shape[0]
    if got != want:
        raise LosslessError(
            f"distill: the teacher in {model_dir} has {got} output tokens, the student {want}",
            hint="distill from a model with the student's tokenizer (e.g. the step's base)",
        )

    def teacher(batch: dict[str, Any]) -> Any:
        device = batch["input_ids"].device
        if model.device != device:
            model.to(device)
        with torch.no_grad():
            return model(
                input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
            ).logits

    return teacher


def teacher_is_base(distill: DistillSettings | None, base: object) -> bool:
    """`distill.model` names the step's own base (as written, e.g. both `instruct`)."""
    return distill is not None and base is not None and distill.model == str(base)


def distill_term(
    settings: DistillSettings,
    model: Any,
    *,
    is_peft: bool,
    same_as_base: bool,
    teacher_dir: Path | None,
) -> DistillTerm:
    """The term for a step: the adapter-off student when the teacher is the base under an
    adapter, else the model in teacher_dir (a full fine-tune of its base loads a frozen copy)."""
    if is_peft and same_as_base:
        teacher = adapter_off_teacher(model)
    elif teacher_dir is not None:
        teacher = loaded_teacher(teacher_dir, model)
    else:
        raise LosslessError(
            f"distill: no directory for the teacher `{settings.model}`",
            hint="run_train needs teacher_dir= unless the teacher is the base of a PEFT step",
        )
    return DistillTerm(teacher, settings.weight, settings.temperature)
