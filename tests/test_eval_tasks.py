"""lm-eval `tasks:` through the eval step on real tiny models, with a stand-in lm_eval package
(tests/fake_lm_eval.py) that answers with lm-eval's recorded output: what lossless asks lm-eval
for, and where the answers land (table, eval.json, chart, gates)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.errors import GateFailed, LosslessError
from lossless.recipe.model import EvalStep, ModelRef
from tests.factories import make_model, write_jsonl
from tests.fake_lm_eval import RECORDED, install

pytest.importorskip("torch")
TASK_DIR = Path(__file__).parent / "lm_eval"  # the "recipe directory": tasks/ is beside it
TASKS = [{"name": "tiny_suite", "num_fewshot": 1}, {"name": "tiny_text", "role": "new"}]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = Path(tmp_path_factory.mktemp("models"))
    write_jsonl(root / "qa.jsonl", [{"prompt": "one plus two is", "completion": " three"}])
    return {
        "base": make_model(root / "base", seed=0),
        "merged": make_model(root / "merged", seed=1),
    }


def step(models: dict[str, Path], **settings) -> EvalStep:
    gate = settings.pop("gate", {})
    return EvalStep(
        name="forgetting",
        models=(ModelRef.parse("base"), ModelRef.parse("merged")),
        data={"qa": str(models["base"].parent / "qa.jsonl")},
        gate=gate,
        settings={"batch_size": 2, "tasks": TASKS, "include_path": "tasks", **settings},
    )


def run(models, tmp_path, quiet=True, **settings):
    from lossless.steps.eval import run_eval

    return run_eval(
        step(models, **settings),
        model_dirs=models,
        out_dir=tmp_path,
        recipe_dir=TASK_DIR,
        quiet=quiet,
    )


def test_task_rows_join_the_table_json_chart_and_gates(models, tmp_path, monkeypatch, capsys):
    fake = install(monkeypatch, {v: k for k, v in models.items()})
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line per row
    acc = RECORDED["merged"]["results"]["tiny_suite"]["acc,none"]
    gate = {"tiny_suite": {"metric": "acc", "min_score": acc + 0.1}, "qa": {"max_regression": 1}}
    with pytest.raises(GateFailed) as caught:
        run(models, tmp_path, quiet=False, num_fewshot=0, gate=gate)
    message = str(caught.value)
    assert f"merged on tiny_suite: acc {acc:.4f} is below the minimum min_score {acc + 0.1:g}" in (
        message
    )
    # Only the task folder was indexed (every task is there), once for the whole step.
    assert fake.managers == [{"include_path": [str(TASK_DIR / "tasks")], "defaults": False}]
    # One call per few-shot count and model; the step's num_fewshot is the default.
    assert [(c["model"], c["tasks"], c["num_fewshot"]) for c in fake.calls] == [
        ("base", ["tiny_suite"], 1),
        ("base", ["tiny_text"], 0),
        ("merged", ["tiny_suite"], 1),
        ("merged", ["tiny_text"], 0),
    ]
    call = fake.calls[0]
    assert call["cwd"] == str(TASK_DIR.absolute())  # relative data_files: from the recipe's dir
    assert call["apply_chat_template"] is False and "fewshot_as_multiturn" not in call
    assert call["confirm_run_unsafe_code"] is False and call["limit"] is None
    assert call["random_seed"] == call["fewshot_random_seed"] == 0
    assert fake.wrapped[0] == {"batch_size": 2, "chat_template": None}

    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["tasks"]["tiny_suite"]["metric"] == "acc"
    assert data["tasks"]["tiny_text"]["role"] == "new"
    merged = data["scores"]["merged"]
    assert merged["tiny_suite"]["acc"] == acc and "loss" in merged["qa"]
    base_acc = data["scores"]["base"]["tiny_suite"]["acc"]
    assert data["changes"]["merged"]["tiny_suite"]["retention_pct"] == pytest.approx(
        100 * acc / base_acc
    )
    assert (
        data["lm_eval"]["merged"]["results"]["tiny_qa"] == RECORDED["merged"]["results"]["tiny_qa"]
    )
    assert data["gates"]["passed"] is False and (tmp_path / "eval.png").stat().st_size > 1000
    table = capsys.readouterr().out
    assert "tiny_suite (old)" in table and "tiny_text (new)" in table and "qa (old)" in table

    from lossless.steps.eval import check_saved_gates

    with pytest.raises(GateFailed) as again:  # a cached step: its saved numbers, gated again
        check_saved_gates(step(models, gate=gate), tmp_path)
    assert str(again.value) == message
    check_saved_gates(step(models, gate={"tiny_suite": {"min_score": 0.0}}), tmp_path)


def test_chat_template_and_harness_options(models, tmp_path, monkeypatch) -> None:
    from lossless.merge.chat_templates import BUILTIN_TEMPLATES

    fake = install(monkeypatch, {v: k for k, v in models.items()})
    options = {
        "apply_chat_template": True,
        "chat_template": "chatml",
        "fewshot_as_multiturn": False,
        "system_instruction": "Answer briefly.",
        "limit": 0.5,
        "seed": 3,
    }
    result = run(models, tmp_path, **options)
    assert result.breaches == () and set(result.lm_eval) == {"base", "merged"}
    assert fake.wrapped[0]["chat_template"] == BUILTIN_TEMPLATES["chatml"]
    call = fake.calls[0]
    assert call["apply_chat_template"] is True and call["fewshot_as_multiturn"] is False
    assert call["system_instruction"] == "Answer briefly." and call["limit"] == 0.5
    assert call["torch_random_seed"] == 3
    # Without a template of its own or `chat_template:`, the model cannot be prompted as a chat.
    with pytest.raises(LosslessError, match="apply_chat_template: base's tokenizer has no chat"):
        run(models, tmp_path / "x", apply_chat_template=True)
    # A gate naming a metric the task does not report: known after the run, reports kept.
    with pytest.raises(LosslessError, match="task 'tiny_suite' reported: acc"):
        run(models, tmp_path / "y", gate={"tiny_suite": {"metric": "acc_norm", "min_score": 0}})
    saved = json.loads((tmp_path / "y" / "eval.json").read_text())
    assert saved["gates"]["passed"] is False and "acc_norm" in saved["gates"]["error"]


def test_task_mistakes_fail_before_any_model_loads(models, tmp_path, monkeypatch) -> None:
    from lossless.steps.eval import run_eval

    fake = install(monkeypatch, {})
    nowhere = {"base": tmp_path / "nope", "merged": tmp_path / "nope"}

    def attempt(**settings):
        gate = settings.pop("gate", {})
        bad = step(models, gate=gate, **settings)
        return run_eval(bad, model_dirs=nowhere, out_dir=tmp_path, recipe_dir=TASK_DIR)

    with pytest.raises(LosslessError) as caught:
        attempt(tasks=["tiny_qaa"])
    assert "eval.forgetting.tasks: lm-eval has no task 'tiny_qaa'" in str(caught.value)
    assert "did you mean tiny_qa" in str(caught.value)
    assert fake.managers[-1]["defaults"] is True  # not all local: the full index was asked
    with pytest.raises(LosslessError, match=r"eval\.forgetting\.include_path: task folder nope"):
        attempt(include_path="nope")
    with pytest.raises(LosslessError, match="no dataset 'arc' in this step's `data:` nor task"):
        attempt(gate={"arc": {"min_score": 0.5}})
    code = tmp_path / "code_tasks"
    (code / "sub").mkdir(parents=True)
    (code / "sub" / "utils.py").write_text("import os\n")
    with pytest.raises(LosslessError) as caught:
        attempt(include_path=str(code))
    assert "holds Python (utils.py)" in str(caught.value)
    assert "--trust-remote-code" in str(caught.value)
    assert not (tmp_path / "eval.json").exists()


def test_trusted_code_folder_and_unsafe_tasks(tmp_path) -> None:
    from lossless.evaluation.harness import harness_settings, task_specs

    code = tmp_path / "tasks"
    code.mkdir()
    (code / "utils.py").write_text("")
    trusted = harness_settings(
        "e", {"tasks": ["t"], "include_path": "tasks"}, tmp_path, trust_remote_code=True
    )
    assert trusted.include_path == (code.absolute(),) and trusted.trust_remote_code
    assert task_specs(
        {"tasks": ["a", {"name": "b", "num_fewshot": 5, "role": "new"}], "num_fewshot": 2}
    ) == (
        task_specs({"tasks": ["a"], "num_fewshot": 2})[0],
        task_specs({"tasks": [{"name": "b", "num_fewshot": 5, "role": "new"}]})[0],
    )
    [a] = task_specs({"tasks": ["a"], "num_fewshot": 2})
    assert (a.name, a.num_fewshot, a.role) == ("a", 2, "old")


def test_a_search_is_not_constrained_by_task_gates() -> None:
    from lossless.recipe.build import build_eval, build_search

    source = build_eval(
        "forgetting",
        {
            "models": ["org/instruct", "merged"],
            "data": {"general": "g.jsonl"},
            "tasks": ["arc_easy"],
            "gate": {"general": {"max_regression": 0.02}, "arc_easy": {"min_score": 0.5}},
        },
    )
    block = {
        "eval": "forgetting",
        "vary": {"t": {"choices": [0.5]}},
        "objective": {"dataset": "general"},
    }
    assert build_search(block, {"forgetting": source}).constraints == {
        "general": {"max_regression": 0.02}
    }


def test_a_recipe_with_every_task_key_validates(tmp_path: Path) -> None:
    from lossless.validation.recipe_check import check_text

    (tmp_path / "my_tasks").mkdir()
    (tmp_path / "general.jsonl").write_text('{"text": "a"}\n')
    text = """\
eval:
  forgetting:
    models: [org/instruct, org/merged]
    data: {general: general.jsonl}
    tasks: [hellaswag, {name: arc_easy, num_fewshot: 5}, {name: mine, role: new}]
    num_fewshot: 0
    include_path: ./my_tasks
    apply_chat_template: true
    fewshot_as_multiturn: false
    system_instruction: Answer briefly.
    chat_template: chatml
    limit: 0.25
    log_samples: true
    gate:
      general: {metric: loss, max_regression: 0.02}
      arc_easy: {metric: "acc,none", max_regression: 0.05}
      mine: {metric: "exact_match,strict-match", min_score: 0.5}
"""
    _, problems = check_text(text, "r.yaml", recipe_dir=tmp_path)
    assert [p.message for p in problems] == []
    _, problems = check_text(text.replace("0.25", "2.5"), "r.yaml", recipe_dir=tmp_path)
    assert [p.path for p in problems] == [("eval", "forgetting", "limit")]  # a count or a fraction
