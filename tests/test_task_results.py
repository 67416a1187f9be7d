"""lm-eval's real output (recorded: tests/lm_eval/record.py) → task rows, gates, retention, the
table, eval.json and the chart's numbers. No lm_eval import: this runs everywhere."""

from __future__ import annotations

import json
import math

import pytest

from lossless.errors import LosslessError
from lossless.evaluation import report
from lossless.evaluation.chart import chart_data
from lossless.evaluation.gates import check_gates
from lossless.evaluation.skills import normalise_metric, saved_skills
from lossless.evaluation.task_results import row_names, task_scores, task_skills
from tests.fake_lm_eval import RECORDED

REQUESTED = ["tiny_suite", "tiny_text"]  # as record.py ran them


def rows(model: str):
    return task_scores(RECORDED[model], REQUESTED)


def scores() -> dict:
    return {m: {n: r.scores for n, r in rows(m).items()} for m in ("base", "merged")}


def skills(roles: dict | None = None):
    return task_skills(rows("base"), roles or {})


def raw(model: str, task: str, key: str) -> float:
    return float(RECORDED[model]["results"][task][key])


def test_metric_names() -> None:
    assert normalise_metric("acc,none") == "acc"
    assert normalise_metric("exact_match,strict-match") == "exact_match,strict-match"
    assert normalise_metric("loss") == "loss"


def test_rows_are_the_requested_tasks_and_groups() -> None:
    base = rows("base")
    # The group is one row; its members (tiny_qa, tiny_echo) are not rows of their own.
    assert list(base) == ["tiny_suite", "tiny_text"]
    suite, text = base["tiny_suite"], base["tiny_text"]
    assert suite.scores == {
        "acc": raw("base", "tiny_suite", "acc,none"),
        "acc_stderr": raw("base", "tiny_suite", "acc_stderr,none"),
    }
    assert suite.metrics == ["acc"] and suite.num_fewshot == 1
    # lm-eval's order (the task's metric_list) is kept; "N/A" standard errors are dropped.
    assert text.metrics == ["word_perplexity", "byte_perplexity", "bits_per_byte"]
    assert "word_perplexity_stderr" not in text.scores and text.num_fewshot == 0
    assert text.higher == {
        "word_perplexity": False,
        "byte_perplexity": False,
        "bits_per_byte": False,
    }
    # A name that is no entry (an lm-eval tag) brings in every task it ran.
    assert row_names(RECORDED["base"], ["a_tag"]) == list(RECORDED["base"]["results"])
    # Members of a requested group (transitively) are not rows; others are.
    assert row_names(RECORDED["base"], ["tiny_suite"]) == ["tiny_suite", "tiny_text"]


def test_filters_are_part_of_the_metric_name() -> None:
    echo = task_scores(RECORDED["base"], ["tiny_echo"])["tiny_echo"]
    assert echo.metrics == ["exact_match,first", "exact_match,lower"]
    assert echo.higher == {"exact_match": True}


def test_skills_take_lm_evals_directions() -> None:
    info = skills({"tiny_text": "new"})
    assert info["tiny_suite"].metric == "acc" and info["tiny_suite"].role == "old"
    assert not info["tiny_suite"].lower_is_better("acc")
    assert info["tiny_text"].metric == "word_perplexity" and info["tiny_text"].role == "new"
    assert info["tiny_text"].lower_is_better("bits_per_byte")
    assert info["tiny_text"].num_fewshot == 0


def test_gates_on_task_metrics() -> None:
    base_bpb, merged_bpb = (raw(m, "tiny_text", "bits_per_byte,none") for m in ("base", "merged"))
    worse = (merged_bpb - base_bpb) / base_bpb  # lower is better: a rise is a regression
    gate = {"tiny_text": {"metric": "bits_per_byte", "max_regression": abs(worse) / 2}}
    breaches = check_gates(gate, scores(), reference="base", skills=skills())
    assert bool(breaches) == (worse > 0)
    loose = {"tiny_text": {"metric": "bits_per_byte,none", "max_regression": abs(worse) * 2}}
    assert check_gates(loose, scores(), reference="base", skills=skills()) == []
    # A floor on acc (higher is better), written as lm-eval spells it.
    acc = raw("merged", "tiny_suite", "acc,none")
    floor = {"tiny_suite": {"metric": "acc,none", "min_score": acc + 0.01}}
    [breach] = check_gates(floor, scores(), reference="base", skills=skills())
    assert breach.message() == (
        f"merged on tiny_suite: acc {acc:.4f} is below the minimum min_score {acc + 0.01:g}"
    )
    # A ceiling on a lower-is-better task metric.
    ppl = raw("merged", "tiny_text", "word_perplexity,none")
    ceiling = {"tiny_text": {"min_score": ppl - 1}}  # the headline: word_perplexity
    [breach] = check_gates(ceiling, scores(), reference="base", skills=skills())
    assert breach.metric == "word_perplexity" and "above the maximum" in breach.message()
    with pytest.raises(LosslessError) as caught:
        check_gates(
            {"tiny_suite": {"metric": "exact_match", "min_score": 0}},
            scores(),
            reference="base",
            skills=skills(),
        )
    assert "uses metric 'exact_match', which was not measured for merged" in str(caught.value)
    assert "task 'tiny_suite' reported: acc;" in str(caught.value)


def test_changes_table_and_eval_json_round_trip(tmp_path) -> None:
    info = skills({"tiny_text": "new"})
    s = scores()
    changes = report.changes(s, "base", info)
    acc = [raw(m, "tiny_suite", "acc,none") for m in ("base", "merged")]
    ppl = [raw(m, "tiny_text", "word_perplexity,none") for m in ("base", "merged")]
    assert changes["merged"]["tiny_suite"]["retention_pct"] == pytest.approx(100 * acc[1] / acc[0])
    assert changes["merged"]["tiny_text"]["gain"] == pytest.approx(ppl[0] - ppl[1])

    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(
        report.render_table(s, "base", info, "t", {"tiny_suite": {"max_regression": 0.1}})
    )
    text = console.export_text()
    assert "tiny_suite (old)" in text and "acc ↑" in text and "max_regression 10 %" in text
    assert "word_perplexity ↓" in text and "bits_per_byte ↓" in text
    assert f"{acc[0]:.4f} ±{raw('base', 'tiny_suite', 'acc_stderr,none'):.3f}" in text

    gate = {"tiny_suite": {"min_score": 1.5}}
    breaches = check_gates(gate, s, reference="base", skills=info)
    payload = report.eval_payload("e", s, "base", info, breaches, RECORDED)
    path = report.write_json(tmp_path / "eval.json", payload)
    saved = json.loads(path.read_text())
    assert saved["tasks"]["tiny_text"] == {
        "role": "new",
        "metric": "word_perplexity",
        "num_fewshot": 0,
        "higher_is_better": {
            "word_perplexity": False,
            "byte_perplexity": False,
            "bits_per_byte": False,
        },
    }
    assert saved["datasets"] == {} and saved["lm_eval"]["base"]["n-shot"]["tiny_qa"] == 1
    assert saved_skills(saved) == info  # what a cached step's gates are re-judged with
    again = check_gates(gate, saved["scores"], reference="base", skills=saved_skills(saved))
    assert again == breaches and len(again) == 1


def test_chart_numbers() -> None:
    info = skills({"tiny_text": "new"})
    s = scores()
    gates = {
        "tiny_suite": {"max_regression": 0.05},
        "tiny_text": {"metric": "bits_per_byte", "max_regression": 0.1, "min_score": 5.5},
    }
    data = chart_data(s, "base", info, gates, [])
    assert data.models == ("merged",)
    [old] = data.old
    acc = [raw(m, "tiny_suite", "acc,none") for m in ("base", "merged")]
    assert old.name == "tiny_suite" and old.metric == "acc"
    assert old.retention["merged"] == pytest.approx(100 * acc[1] / acc[0])
    assert [line.value for line in old.lines] == [pytest.approx(95.0)]
    [new] = data.new
    bpb = [raw(m, "tiny_text", "bits_per_byte,none") for m in ("base", "merged")]
    assert new.metric == "bits_per_byte" and new.lower_is_better  # the gated metric is drawn
    assert new.values == {"base": bpb[0], "merged": bpb[1]}
    assert new.gains["merged"] == pytest.approx(bpb[0] - bpb[1])
    # max_regression 10 % on a lower-is-better metric: the worst allowed value is 1.1 × reference.
    assert [(line.label, line.value) for line in new.lines] == [
        ("max_regression 10 %", pytest.approx(1.1 * bpb[0])),
        ("min_score 5.5", 5.5),
    ]
    assert not math.isnan(new.values["merged"])
