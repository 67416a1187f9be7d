"""distill: the KL term against closed forms, a step that logs it and saves its adapter, and the
teacher that is the base itself (adapter switched off, no second model loaded)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lossless.recipe.build import build_train
from lossless.steps.train import run_train
from tests.factories import make_model, write_jsonl

NEW = [{"prompt": f"add {i} {i}:", "completion": f" {2 * i}"} for i in range(8)]
OLD = [{"text": f"the cat sat on mat {i}"} for i in range(5)]


def _two_token_batch():
    """Row 0 is a replay row with one supervised next-token position (position 0 → label at 1);
    row 1 is a new row. Every other position holds random logits that must not count."""
    import torch

    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 2, generator=g)
    teacher = torch.randn(2, 3, 2, generator=g)
    student[0, 0] = torch.tensor([0.0, 0.0])
    teacher[0, 0] = torch.tensor([0.0, 2 * math.log(3)])
    labels = torch.tensor([[7, 1, -100], [0, 1, 1]])
    return student, teacher, labels, torch.tensor([1, 0])


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        # T=2: p_t = softmax([0, ln 3]) = (1/4, 3/4), p_s = (1/2, 1/2).
        (2.0, 0.25 * math.log(0.5) + 0.75 * math.log(1.5)),
        # T=1: p_t = softmax([0, 2 ln 3]) = (1/10, 9/10), p_s = (1/2, 1/2).
        (1.0, 0.1 * math.log(0.2) + 0.9 * math.log(1.8)),
    ],
)
def test_kl_matches_closed_form_on_two_token_vocab(temperature: float, expected: float) -> None:
    import torch

    from lossless.training.distill import distill_kl

    student, teacher, labels, rows = _two_token_batch()
    got = float(distill_kl(student, teacher, labels, rows, temperature))
    assert got == pytest.approx(expected, rel=1e-6)
    # Prompt tuning's student logits start with virtual tokens: the last positions are the real ones.
    virtual = torch.cat([torch.randn(2, 4, 2), student], dim=1)
    assert float(distill_kl(virtual, teacher, labels, rows, temperature)) == pytest.approx(
        expected, rel=1e-6
    )


def test_term_is_weight_times_t_squared_times_kl_and_zero_without_replay_rows() -> None:
    import torch

    from lossless.training.distill import DistillTerm

    student, teacher, labels, rows = _two_token_batch()
    outputs = type("Out", (), {"logits": student})()
    term = DistillTerm(teacher=lambda batch: teacher, weight=0.5, temperature=2.0)
    value = float(term(None, {"labels": labels, "replay": rows}, outputs))
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert value == pytest.approx(0.5 * 4 * kl, rel=1e-6) and term.kl_values == [
        pytest.approx(kl, rel=1e-6)
    ]
    assert float(term(None, {"labels": labels, "replay": torch.tensor([0, 0])}, outputs)) == 0.0
    # No replay marks (a step without `replay:`): every row's supervised positions count.
    both = float(term(None, {"labels": labels}, outputs))
    assert both != pytest.approx(value) and both > 0


def test_adapter_off_teacher_gives_the_base_logits(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lossless.training.distill import adapter_off_teacher

    base = make_model(tmp_path / "base", layers=1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules="all-linear")
    )
    with torch.no_grad():  # peft starts with B = 0; a non-zero B makes the adapter matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4)}
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(base)(**batch).logits
        adapted = model(**batch).logits
    model.train()
    got = adapter_off_teacher(model)(batch)
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(adapted, want, atol=1e-3)
    assert model.training  # the teacher forward restores train mode


def test_distill_step_with_replay_logs_the_term_and_saves_adapter(tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", layers=1)
    teacher = make_model(tmp_path / "instruct", layers=1, seed=7)
    write_jsonl(tmp_path / "new.jsonl", NEW)
    write_jsonl(tmp_path / "old.jsonl", OLD)
    step = build_train(
        "t",
        {
            "base": "base",
            "data": "new.jsonl",
            "max_steps": 2,
            "batch_size": 12,  # 8 new + 4 replay rows: every batch holds replay rows
            "replay": {"data": "old.jsonl", "fraction": 0.5},
            "distill": {"model": "instruct", "weight": 0.5, "temperature": 2.0},
            "ewc": {"data": "old.jsonl", "samples": 2},
        },
    )
    m = run_train(
        step,
        base_dir=base,
        teacher_dir=teacher,
        out_dir=tmp_path / "o",
        recipe_dir=tmp_path,
        quiet=True,
    )
    assert m["steps"] == 2 and (tmp_path / "o" / "adapter_model.safetensors").exists()
    kl, added = m["distill_kl"], m["loss_terms"]["distill"]
    assert len(kl) == 2 and all(v > 0 for v in kl)  # a different model: the KL is never 0
    assert added == pytest.approx([0.5 * 4 * v for v in kl], rel=1e-5)
    assert m["distill_last_kl"] == kl[-1] and len(m["loss_terms"]["ewc"]) == 2


def test_teacher_equal_to_base_loads_no_second_model(tmp_path: Path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    base = make_model(tmp_path / "base", layers=1)
    write_jsonl(tmp_path / "new.jsonl", NEW)
    loads: list[object] = []
    original = AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    step = build_train(
        "t",
        {
            "base": "base",
            "data": "new.jsonl",
            "max_steps": 3,
            "batch_size": 8,
            "learning_rate": 5e-2,
            "distill": {"model": "base"},
        },
    )
    m = run_train(step, base_dir=base, out_dir=tmp_path / "o", recipe_dir=tmp_path, quiet=True)
    assert loads == [base]  # the student's base only; the teacher is its adapter-off forward
    # At step 1 the LoRA's B is 0, so student = base = teacher and the KL is 0; then it moves.
    assert m["distill_kl"][0] == pytest.approx(0.0, abs=1e-7) and m["distill_kl"][-1] > 0


def test_full_fine_tune_distilling_from_its_base_loads_a_frozen_copy(tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", layers=1)
    write_jsonl(tmp_path / "new.jsonl", NEW)
    step = build_train(
        "t",
        {
            "base": "base",
            "method": "full",
            "data": "new.jsonl",
            "max_steps": 2,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "distill": {"model": "base", "temperature": 1.0},
        },
    )
    m = run_train(step, base_dir=base, out_dir=tmp_path / "o", recipe_dir=tmp_path, quiet=True)
    assert m["distill_kl"][0] == pytest.approx(0.0, abs=1e-7) and m["distill_kl"][1] > 0
    assert any((tmp_path / "o").glob("*.safetensors"))


def test_teacher_step_is_an_input_ordered_first(tmp_path: Path) -> None:
    from lossless.recipe.graph import topological_steps
    from lossless.validation.recipe_check import load_recipe

    write_jsonl(tmp_path / "new.jsonl", NEW)
    (tmp_path / "r.yaml").write_text(
        "train:\n"
        "  skill:\n"
        "    base: org/base\n"
        "    data: new.jsonl\n"
        "    distill: {model: instruct}\n"
        "  instruct:\n"
        "    base: org/base\n"
        "    data: new.jsonl\n"
    )
    recipe, _ = load_recipe(tmp_path / "r.yaml")
    assert [i.role for i in recipe.inputs_of("skill", "model")] == ["base", "distill"]
    assert [s.name for s in topological_steps(recipe)] == ["instruct", "skill"]
