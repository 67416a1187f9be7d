"""The eval step end to end on two tiny models: eval.json, the PNG, the table, gates, lm_eval."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from lossless.errors import GateFailed, LosslessError
from lossless.recipe.model import EvalStep, ModelRef
from tests.factories import make_model, write_jsonl

torch = pytest.importorskip("torch")

QA = [
    {"prompt": "the cat sat on", "completion": " the mat"},
    {"prompt": "one plus two is", "completion": " three"},
    {"prompt": "the dog ate", "completion": " the bone"},
]
TEXT = [{"text": "hello world this is a tiny corpus"}, {"text": "reverse the words please"}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = Path(tmp_path_factory.mktemp("eval"))
    models = {
        "base": make_model(root / "base", seed=0),
        "merged": make_model(root / "merged", seed=1),
    }
    write_jsonl(root / "data" / "qa.jsonl", QA)
    write_jsonl(root / "data" / "text.jsonl", TEXT)
    return root, models


def step(**overrides) -> EvalStep:
    fields = dict(
        name="forgetting",
        models=(ModelRef.parse("base"), ModelRef.parse("merged")),
        data={"qa": "data/qa.jsonl", "text": {"path": "data/text.jsonl", "role": "new"}},
        settings={"batch_size": 2, "max_new_tokens": 3},
    )
    fields.update(overrides)
    return EvalStep(**fields)


def direct_loss(model_dir: Path, path: Path) -> float:
    """Loss recomputed without lossless.evaluation: one sequence at a time, answer tokens only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lossless.training.datasets import detect_format, encode, load_rows, to_examples

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = load_rows(path)
    total, count = 0.0, 0
    for ex in to_examples(rows, detect_format(rows, str(path)), tok, None):
        ids, labels = encode(tok, ex, 128, loss_on="answer")
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        target = torch.tensor(labels[1:])
        keep = target != -100
        total += float(
            torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
        )
        count += int(keep.sum())
    return total / count


def test_eval_json_png_and_changes(setup, tmp_path: Path, capsys) -> None:
    from lossless.steps.eval import run_eval

    root, models = setup
    result = run_eval(
        step(), model_dirs=models, out_dir=tmp_path / "out", recipe_dir=root, quiet=False
    )
    data = json.loads(result.json_path.read_text())
    assert result.json_path == tmp_path / "out" / "eval.json"
    assert data["step"] == "forgetting" and data["reference"] == "base"  # first model by default
    assert data["datasets"]["qa"] == {
        "path": str(root / "data" / "qa.jsonl"),
        "format": "completion",
        "role": "old",
        "metric": "loss",  # completion data is judged (and gated) on loss by default
    }
    assert data["datasets"]["text"]["role"] == "new"
    for name in ("base", "merged"):
        qa = data["scores"][name]["qa"]
        assert qa["loss"] == pytest.approx(
            direct_loss(models[name], root / "data" / "qa.jsonl"), rel=1e-5
        )
        assert qa["perplexity"] == pytest.approx(math.exp(qa["loss"]), rel=1e-9)
        assert 0.0 <= qa["exact_match"] <= 1.0 and qa["examples"] == 3
        assert set(data["scores"][name]["text"]) == {"examples", "tokens", "loss", "perplexity"}
    text_loss = data["scores"]["merged"]["text"]["loss"]
    assert text_loss == pytest.approx(
        direct_loss(models["merged"], root / "data" / "text.jsonl"), rel=1e-5
    )
    # retention (old data, loss): 100 × reference / model; gain (new data, loss): reference − model.
    base, merged = data["scores"]["base"], data["scores"]["merged"]
    assert data["changes"]["merged"]["qa"]["retention_pct"] == pytest.approx(
        100 * base["qa"]["loss"] / merged["qa"]["loss"]
    )
    assert data["changes"]["merged"]["text"]["gain"] == pytest.approx(
        base["text"]["loss"] - merged["text"]["loss"]
    )
    assert "base" not in data["changes"]
    assert data["gates"] == {"passed": True, "breaches": []}
    assert result.scores == {
        m: {d: pytest.approx(v) for d, v in s.items()} for m, s in data["scores"].items()
    }

    png = result.chart_path
    assert png == tmp_path / "out" / "eval.png"
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width > 100 and height > 100

    table = capsys.readouterr().out
    assert "(reference)" in table and "merged" in table and "qa (old)" in table
    assert "text (new)" in table and "loss ↓" in table and "exact_match ↑" in table
    retention = data["changes"]["merged"]["qa"]["retention_pct"]
    assert f"{retention:.1f} %" in table
    run_eval(step(), model_dirs=models, out_dir=tmp_path / "q", recipe_dir=root, quiet=True)
    assert capsys.readouterr().out == ""  # quiet: the numbers are in eval.json only


def test_gate_failure_names_model_dataset_value_threshold(setup, tmp_path: Path) -> None:
    from lossless.steps.eval import run_eval

    root, models = setup
    # Two random models differ; a zero-tolerance gate on loss in both directions fails one of them.
    gated = step(
        models=(ModelRef.parse("merged"),),
        reference=ModelRef.parse("base"),
        gate={"qa": {"min_score": 0.5}, "text": {"max_regression": 0.0, "relative": False}},
    )
    with pytest.raises(GateFailed) as caught:
        run_eval(gated, model_dirs=models, out_dir=tmp_path, recipe_dir=root, quiet=True)
    data = json.loads((tmp_path / "eval.json").read_text())  # reports are written before failing
    qa_loss = data["scores"]["merged"]["qa"]["loss"]
    message = str(caught.value)
    assert f"merged on qa: loss {qa_loss:.4f} is above the maximum min_score 0.5" in message
    assert data["gates"]["passed"] is False
    assert next(b["dataset"] for b in data["gates"]["breaches"]) == "qa"
    text_worse = data["scores"]["merged"]["text"]["loss"] > data["scores"]["base"]["text"]["loss"]
    assert ("merged on text: loss" in message) == text_worse
    assert "eval.json" in message  # the hint says where the numbers are

    # A cached (fresh) eval step is skipped, but its saved numbers are gated again.
    from lossless.steps.eval import check_saved_gates

    with pytest.raises(GateFailed) as again:
        check_saved_gates(gated, tmp_path)
    assert str(again.value) == message
    check_saved_gates(step(gate={"qa": {"min_score": 10.0}}), tmp_path)  # a loss ceiling of 10
    with pytest.raises(LosslessError, match="--force forgetting"):
        check_saved_gates(gated, tmp_path / "nowhere")


def test_gate_and_task_mistakes_fail_before_scoring(setup, tmp_path: Path, monkeypatch) -> None:
    from lossless.steps.eval import run_eval

    root, _models = setup
    # Model dirs that do not exist prove nothing was loaded before the error.
    nowhere = {"base": tmp_path / "nope", "merged": tmp_path / "nope"}
    with pytest.raises(LosslessError, match=r"eval.forgetting.gate.typo: no dataset 'typo'"):
        run_eval(
            step(gate={"typo": {"min_score": 1}}),
            model_dirs=nowhere,
            out_dir=tmp_path,
            recipe_dir=root,
        )
    with pytest.raises(
        LosslessError, match="exact_match needs prompts and answers, but 'text' is text"
    ):
        run_eval(
            step(gate={"text": {"metric": "exact_match", "min_score": 0.1}}),
            model_dirs=nowhere,
            out_dir=tmp_path,
            recipe_dir=root,
        )
    with pytest.raises(
        LosslessError, match=r"eval.forgetting.data.qa: data file .*missing.jsonl does not exist"
    ):
        run_eval(
            step(data={"qa": "missing.jsonl"}),
            model_dirs=nowhere,
            out_dir=tmp_path,
            recipe_dir=root,
        )
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    with pytest.raises(LosslessError) as caught:
        run_eval(
            step(settings={"tasks": ["hellaswag"]}),
            model_dirs=nowhere,
            out_dir=tmp_path,
            recipe_dir=root,
        )
    assert "lm-evaluation-harness, which is not installed" in str(caught.value)
    assert "pip install 'lossless[lm-eval]'" in str(caught.value)
    assert not (tmp_path / "eval.json").exists()


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_chat_data_is_judged_and_gated_on_exact_match(setup, tmp_path: Path) -> None:
    from lossless.steps.eval import run_eval

    root, models = setup
    chat = [
        {
            "messages": [
                {"role": "user", "content": "reverse: sun bird"},
                {"role": "assistant", "content": "bird sun"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "add: 3 5"},
                {"role": "assistant", "content": "8"},
            ]
        },
    ]
    write_jsonl(root / "data" / "chat.jsonl", chat)
    gated = step(
        data={"chat": "data/chat.jsonl"},
        settings={"chat_template": CHATML},
        gate={"chat": {"min_score": 0.5}},  # no metric named: exact_match for chat data
    )
    with pytest.raises(GateFailed) as caught:
        run_eval(gated, model_dirs=models, out_dir=tmp_path, recipe_dir=root, quiet=True)
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["datasets"]["chat"]["format"] == "chat"
    assert data["datasets"]["chat"]["metric"] == "exact_match"
    em = data["scores"]["merged"]["chat"]["exact_match"]
    assert em < 0.5  # a random model does not reverse words
    assert f"merged on chat: exact_match {em:.4f} is below the minimum min_score 0.5" in str(
        caught.value
    )
