"""Datasets mixed by weight: exact counts, a seeded order, copies held out together, replay and
EWC shares, validation with lines, and fingerprints that see every weight and every path."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.recipe.build import build_recipe, build_train
from lossless.recipe.inputs import walk_inputs
from lossless.training.examples import build_dataset, hold_out, tokenize
from lossless.training.mixing import draw_rows, mix, mix_counts
from lossless.training.settings import DataSource, TrainSettings
from lossless.validation.recipe_check import check_text
from tests.factories import make_tokenizer, write_jsonl


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(make_tokenizer(tmp_path_factory.mktemp("tok")))


def test_counts_are_each_weights_share_by_largest_remainder() -> None:
    assert mix_counts([3, 1], 110) == [83, 27]  # 82.5 / 27.5: the tie goes to the first
    assert mix_counts([1, 1, 1], 10) == [4, 3, 3]
    assert mix_counts([0.1, 0.2, 0.7], 7) == [1, 1, 5]  # 0.7, 1.4, 4.9
    assert mix_counts([2, 2], 0) == [0, 0]
    with pytest.raises(ValueError):
        mix_counts([1, 0], 4)


def test_rows_repeat_only_when_a_source_is_smaller_than_its_share() -> None:
    rng = random.Random(0)
    small = Counter(draw_rows(10, 27, rng))  # two full passes, then 7 rows a third time
    assert sorted(small.values()) == [2] * 3 + [3] * 7 and set(small) == set(range(10))
    large = draw_rows(100, 30, rng)
    assert len(set(large)) == 30  # enough rows: all distinct


def test_same_seed_same_order_other_seed_other_order() -> None:
    picks = mix([100, 10], [3, 1], 110, seed=7)
    assert picks == mix([100, 10], [3, 1], 110, seed=7)
    assert picks != mix([100, 10], [3, 1], 110, seed=8)
    assert Counter(s for s, _ in picks) == {0: 83, 1: 27}
    assert Counter(s for s, _ in mix([100, 10], [3, 1], 110, seed=8)) == {0: 83, 1: 27}
    assert max(Counter(p for p in picks if p[0] == 0).values()) == 1  # 83 of 100: no repeats


def _files(root: Path) -> tuple[DataSource, DataSource]:
    write_jsonl(root / "big.jsonl", [{"text": f"alpha {i}"} for i in range(9)])
    write_jsonl(root / "small.jsonl", [{"text": f"beta {i}"} for i in range(3)])
    return DataSource("big.jsonl", weight=1), DataSource("small.jsonl", weight=1)


def _texts(features: list[dict], tok) -> list[str]:
    return [tok.decode(f["input_ids"], skip_special_tokens=True).strip() for f in features]


def test_a_mixture_of_real_files_has_the_weighted_rows_in_a_seeded_order(
    tmp_path: Path, tok
) -> None:
    big, small = _files(tmp_path)
    settings = TrainSettings(data=(big, small), max_seq_length=32)
    features = tokenize(settings.data, settings, tok, tmp_path, seed=3)
    texts = _texts(features, tok)
    # 12 rows in all (9 + 3), half each: 6 distinct alpha rows, each beta row twice
    assert len(texts) == 12
    alpha = [t for t in texts if t.startswith("alpha")]
    beta = Counter(t for t in texts if t.startswith("beta"))
    assert len(alpha) == len(set(alpha)) == 6
    assert beta == {"beta 0": 2, "beta 1": 2, "beta 2": 2}
    assert _texts(tokenize(settings.data, settings, tok, tmp_path, seed=3), tok) == texts
    assert _texts(tokenize(settings.data, settings, tok, tmp_path, seed=4), tok) != texts

    weighted = TrainSettings(data=(DataSource("big.jsonl", weight=3), small), max_seq_length=32)
    counts = Counter(
        t.split()[0] for t in _texts(tokenize(weighted.data, weighted, tok, tmp_path), tok)
    )
    assert counts == {"alpha": 9, "beta": 3}  # 3:1 of 12

    plain = TrainSettings(data=(DataSource("big.jsonl"), DataSource("small.jsonl")))
    concatenated = _texts(tokenize(plain.data, plain, tok, tmp_path), tok)
    assert concatenated == [f"alpha {i}" for i in range(9)] + [f"beta {i}" for i in range(3)]


def test_held_out_rows_take_every_copy_with_them(tmp_path: Path, tok) -> None:
    settings = TrainSettings(data=_files(tmp_path), max_seq_length=32)
    features = tokenize(settings.data, settings, tok, tmp_path, seed=0)
    for seed in range(5):
        train, held = hold_out(features, 0.25, seed)
        assert len(held) + len(train) == 12
        assert not set(_texts(train, tok)) & set(_texts(held, tok))
        # 9 distinct rows (6 alpha + 3 beta): round(0.25 × 9) = 2 rows held out, with copies
        assert len(set(_texts(held, tok))) == 2
        assert all("origin" not in f for f in train + held)


def test_replay_and_ewc_mixtures_share_their_own_counts(tmp_path: Path, tok) -> None:
    from lossless.training.settings import EwcSettings, ReplaySettings

    write_jsonl(tmp_path / "new.jsonl", [{"text": f"gamma {i}"} for i in range(8)])
    old = _files(tmp_path)
    replay = ReplaySettings(data=(old[0], DataSource("small.jsonl", weight=3)), fraction=0.5)
    settings = TrainSettings(data=(DataSource("new.jsonl"),), replay=replay, max_seq_length=32)
    features = build_dataset("t", settings, tok, tmp_path, seed=0)
    replayed = [
        t.split()[0] for f, t in zip(features, _texts(features, tok), strict=True) if f["replay"]
    ]
    assert Counter(replayed) == {"alpha": 1, "beta": 3}  # 0.5 × 8 = 4 rows, 1:3
    ewc = EwcSettings(data=old, samples=5)
    picked = tokenize(ewc.data, settings, tok, tmp_path, seed=0, total=ewc.samples)
    assert Counter(t.split()[0] for t in _texts(picked, tok)) == {"alpha": 3, "beta": 2}


def test_an_unweighted_entry_in_a_mixture_is_an_error_for_the_api_too(tmp_path: Path, tok) -> None:
    big, _ = _files(tmp_path)
    settings = TrainSettings(data=(big, DataSource("small.jsonl")))
    with pytest.raises(LosslessError, match="every dataset needs a positive weight"):
        tokenize(settings.data, settings, tok, tmp_path)


RECIPE = """\
train:
  t:
    base: org/tiny
    data:
      - {path: big.jsonl, weight: WEIGHT}
      - {path: small.jsonl, weight: 1}
    replay: {data: [{path: old.jsonl, weight: 2}, {path: older.jsonl, weight: 1}]}
"""


def test_every_path_of_a_mixture_is_an_input_and_a_weight_changes_the_fingerprint(
    tmp_path: Path,
) -> None:
    import yaml

    from lossless.engine.context import RunOptions
    from lossless.engine.freshness import Freshness
    from lossless.engine.resolver import Resolver
    from lossless.engine.state import StateStore

    for name in ("big", "small", "old", "older"):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": name}])
    docs = [yaml.safe_load(RECIPE.replace("WEIGHT", "3"))]
    paths = [(i.path[3:], i.value) for i in walk_inputs(docs) if i.kind == "data"]
    assert paths == [
        (("data", 0, "path"), "big.jsonl"),
        (("data", 1, "path"), "small.jsonl"),
        (("replay", "data", 0, "path"), "old.jsonl"),
        (("replay", "data", 1, "path"), "older.jsonl"),
    ]

    def fingerprint(weight: str) -> dict[str, str]:
        recipe = build_recipe(
            str(tmp_path / "r.yaml"), [yaml.safe_load(RECIPE.replace("WEIGHT", weight))]
        )
        (step,) = recipe.steps
        freshness = Freshness(
            recipe, RunOptions(), Resolver(recipe), StateStore(tmp_path / "w"), lambda s: tmp_path
        )
        # The base is a hub id: its identity is not the point here.
        freshness.resolver.identity = lambda name, revision=None: "hub:x"  # type: ignore[method-assign]
        return freshness.fingerprint(step).components

    three, four = fingerprint("3"), fingerprint("4")
    assert {k for k in three if k.startswith("data:")} == {
        "data:big.jsonl",
        "data:small.jsonl",
        "data:old.jsonl",
        "data:older.jsonl",
    }
    assert three["settings"] != four["settings"]
    assert {k: v for k, v in three.items() if k != "settings"} == {
        k: v for k, v in four.items() if k != "settings"
    }
    settings = build_train("t", docs[0]["train"]["t"]).settings
    assert [s.weight for s in settings.data] == [3.0, 1.0]
    assert settings.replay is not None and [s.weight for s in settings.replay.data] == [2.0, 1.0]


@pytest.mark.parametrize(
    ("entry", "message", "line", "col"),
    [
        ("{path: small.jsonl, weight: -1}", "value out of range (exclusiveMinimum 0)", 6, 37),
        ("{path: small.jsonl, weight: heavy}", "wrong type: expected number", 6, 37),
        ("small.jsonl", "`data` mixes its datasets by weight, but entry 1 has none", 6, 9),
    ],
)
def test_bad_weights_are_errors_with_their_line(
    entry: str, message: str, line: int, col: int
) -> None:
    text = (
        "train:\n  t:\n    base: org/tiny\n    data:\n      - {path: big.jsonl, weight: 2}\n"
        f"      - {entry}\n"
    )
    _, problems = check_text(text, "r.yaml")
    found = [p for p in problems if p.message == message]
    assert found, [p.message for p in problems]
    assert (found[0].line, found[0].col) == (line, col)
