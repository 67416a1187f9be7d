"""The real lm-evaluation-harness, offline, on a task of a local folder (`include_path`):
tests/lm_eval/tasks/tiny_qa.yaml, multiple choice over a JSONL file beside it. Skipped when
lm_eval is not installed (`pip install 'lossless[lm-eval]'`).

lm-eval's numbers are checked against a direct computation: each choice's log-likelihood after
the prompt lm-eval built (one-shot, through the ChatML template), from the same tiny model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.errors import GateFailed
from lossless.recipe.model import EvalStep, ModelRef
from tests.factories import make_model

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")
RECIPE_DIR = Path(__file__).parent / "lm_eval"  # tasks/ is beside it, as in a recipe's folder


def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context), summed over the continuation's tokens. As lm-eval does,
    the context's trailing whitespace is scored as part of the continuation."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    start = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return float(sum(logits[i - 1, whole[i]] for i in range(start, len(whole))))


def test_a_local_task_through_lm_eval(tmp_path: Path, monkeypatch, capfd) -> None:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lossless.steps.eval import check_saved_gates, run_eval

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    models = {
        "base": make_model(tmp_path / "base", seed=0),
        "merged": make_model(tmp_path / "m", seed=1),
    }
    settings = {
        "tasks": [{"name": "tiny_qa", "num_fewshot": 1}],
        "include_path": "tasks",
        "apply_chat_template": True,
        "chat_template": "chatml",
        "log_samples": True,
        "batch_size": 4,
    }
    step = EvalStep("forgetting", tuple(map(ModelRef.parse, models)), {}, settings=settings)
    out = tmp_path / "out"
    capfd.readouterr()
    result = run_eval(step, model_dirs=models, out_dir=out, recipe_dir=RECIPE_DIR, quiet=True)
    said = "".join(capfd.readouterr())
    # Quiet: none of lm-eval's bars, warnings or `git describe` errors (its own report).
    assert "loglikelihood requests" not in said and "[Task: " not in said and "fatal" not in said

    data = json.loads((out / "eval.json").read_text())
    assert data["tasks"]["tiny_qa"] == {
        "role": "old",
        "metric": "acc",
        "num_fewshot": 1,
        "higher_is_better": {"acc": True, "acc_norm": True},
    }
    docs = [json.loads(line) for line in (RECIPE_DIR / "tasks" / "tiny_qa.jsonl").open()]
    for name, model_dir in models.items():
        samples = [json.loads(x) for x in (out / "samples" / name / "tiny_qa.jsonl").open()]
        assert len(samples) == len(docs)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        right = 0
        for sample in samples:
            doc = docs[sample["doc_id"]]
            context = sample["arguments"][0][0]
            # One example shot as its own chat turn, then the question, then the answer's turn.
            assert context.count("<|im_start|>user\n") == 2
            assert context.endswith(
                f"<|im_start|>user\n{doc['question']}<|im_end|>\n<|im_start|>assistant\n"
            )
            pairs = sample["arguments"]  # (context, continuation) per choice
            assert [c.strip() for _, c in pairs] == doc["choices"]
            ours = [loglikelihood(model, tokenizer, ctx, c) for ctx, c in pairs]
            theirs = [resp[0][0] for resp in sample["resps"]]
            assert theirs == pytest.approx(ours, abs=1e-3)
            right += max(range(len(ours)), key=ours.__getitem__) == doc["answer"]
        assert data["scores"][name]["tiny_qa"]["acc"] == pytest.approx(right / len(docs))
    assert result.breaches == () and (out / "eval.png").stat().st_size > 1000

    # Gate the task's metric as lm-eval spells it; the saved numbers are judged again.
    acc = data["scores"]["merged"]["tiny_qa"]["acc"]
    gated = EvalStep(
        step.name,
        step.models,
        {},
        gate={"tiny_qa": {"metric": "acc,none", "min_score": acc + 0.01}},
        settings=settings,
    )
    with pytest.raises(GateFailed, match=f"merged on tiny_qa: acc {acc:.4f} is below the minimum"):
        check_saved_gates(gated, out)
