"""eval.png's numbers on crafted scores: retention %, gains, where each gate's line goes."""

from __future__ import annotations

import pytest

from lossless.evaluation.chart import chart_data, write_chart
from lossless.evaluation.gates import check_gates
from lossless.evaluation.skills import SkillInfo

SKILLS = {
    "general": SkillInfo("general", "g.jsonl", "chat", "old", "exact_match"),
    "code": SkillInfo("code", "c.jsonl", "text", "old", "loss"),
    "arc_easy": SkillInfo("arc_easy", "", "lm-eval", "old", "acc", higher={"acc": True}),
    "skill": SkillInfo("skill", "n.jsonl", "chat", "new", "exact_match"),
    "wiki": SkillInfo("wiki", "", "lm-eval", "new", "word_perplexity", {"word_perplexity": False}),
}
SCORES = {
    "instruct": {
        "general": {"exact_match": 0.80, "loss": 1.0},
        "code": {"loss": 2.0},
        "arc_easy": {"acc": 0.70},
        "skill": {"exact_match": 0.10},
        "wiki": {"word_perplexity": 20.0},
    },
    "merged": {
        "general": {"exact_match": 0.78, "loss": 1.2},
        "code": {"loss": 2.1},
        "arc_easy": {"acc": 0.63},
        "skill": {"exact_match": 0.55},
        "wiki": {"word_perplexity": 18.0},
    },
    "adapted": {
        "general": {"exact_match": 0.60, "loss": 1.5},
        "code": {"loss": 2.5},
        "arc_easy": {"acc": 0.50},
        "skill": {"exact_match": 0.70},
        "wiki": {"word_perplexity": 25.0},
    },
}
GATES = {
    "general": {"metric": "loss", "max_regression": 0.25},  # the gated metric is drawn
    "code": {"max_regression": 0.3, "relative": False, "min_score": 2.4},
    "arc_easy": {"metric": "acc", "max_regression": 0.1},
    "skill": {"min_score": 0.5},
    "wiki": {"max_regression": 0.1},
}


def data():
    breaches = check_gates(GATES, SCORES, reference="instruct", skills=SKILLS)
    return chart_data(SCORES, "instruct", SKILLS, GATES, breaches)


def test_retention_and_gate_lines_on_old_skills() -> None:
    d = data()
    assert d.reference == "instruct" and d.models == ("merged", "adapted")
    general, code, arc = d.old
    # loss 1.0 → 1.2: retention 100 × 1.0 / 1.2; a 25 % rise allowed: the line at 100 / 1.25 = 80.
    assert general.metric == "loss"
    assert general.retention == {
        "merged": pytest.approx(100 / 1.2),
        "adapted": pytest.approx(100 / 1.5),
    }
    assert [(g.label, g.value) for g in general.lines] == [
        ("max_regression 25 %", pytest.approx(80.0))
    ]
    assert general.breached == {"adapted"}  # 50 % worse
    # Absolute 0.3 on loss 2.0: worst 2.3 → 100 × 2.0 / 2.3; min_score 2.4 (a ceiling) → 100 × 2 / 2.4.
    assert code.retention["merged"] == pytest.approx(100 * 2.0 / 2.1)
    assert [g.value for g in code.lines] == [
        pytest.approx(100 * 2.0 / 2.3),
        pytest.approx(100 * 2.0 / 2.4),
    ]
    assert code.lines[0].label == "max_regression 0.3 (absolute)"
    # acc 0.70 → 0.63 is exactly 90 %: on the line, not a breach; 0.50 is.
    assert arc.retention == {
        "merged": pytest.approx(90.0),
        "adapted": pytest.approx(100 * 0.5 / 0.7),
    }
    assert [g.value for g in arc.lines] == [pytest.approx(90.0)]
    assert arc.breached == {"adapted"}


def test_new_skills_in_their_own_units() -> None:
    skill, wiki = data().new
    assert skill.values == {"instruct": 0.10, "merged": 0.55, "adapted": 0.70}
    assert skill.gains == {"merged": pytest.approx(0.45), "adapted": pytest.approx(0.60)}
    assert [(g.label, g.value) for g in skill.lines] == [("min_score 0.5", 0.5)]
    assert skill.breached == frozenset()
    # Lower is better (lm-eval says so): the gain is the drop, the line at 1.1 × the reference.
    assert wiki.lower_is_better and wiki.gains == {"merged": 2.0, "adapted": -5.0}
    assert [g.value for g in wiki.lines] == [pytest.approx(22.0)]
    assert wiki.breached == {"adapted"}


def test_the_chart_is_drawn(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    path, note = write_chart(tmp_path / "eval.png", data(), "eval forgetting")
    assert note is None and path == tmp_path / "eval.png"
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width >= 700 and height == 420  # an old-skills panel and two new-skill panels
    only_ref = chart_data({"instruct": SCORES["instruct"]}, "instruct", SKILLS, {}, [])
    assert [s.retention for s in only_ref.old] == [{}, {}, {}]
    path, _ = write_chart(tmp_path / "alone.png", only_ref, "one model")
    assert path.stat().st_size > 1000
