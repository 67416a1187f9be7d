"""TrainSettings: built with the recipe, every schema key typed, defaults explicit, and the
fingerprints of recipes written before typed settings unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from lossless.engine.fingerprint import digest
from lossless.engine.freshness import train_provenance
from lossless.recipe.build import build_train
from lossless.recipe.schema import load_schema
from lossless.training.settings import (
    DataSource,
    EwcSettings,
    InitSettings,
    InitTokenizer,
    LoraSettings,
    TrainSettings,
)

# Settings digests computed by the untyped code (commit 034a2ab) for these blocks: a recipe's
# train steps stay fresh across the change to typed settings.
PINNED = {
    "4b1bacd61a1f810b60ec24e8f112189f43de114f4429e6d4f31cc5709d714f35": {
        "base": "org/m",
        "data": "d.jsonl",
    },
    "74484b5bcfa9b32f7641d12051ec75c8ebaa0340e39074d9fedf7c72378afe5b": {
        "base": "org/m@v1",
        "method": "full",
        "data": ["a.jsonl", "b.jsonl"],
        "learning_rate": 1e-5,
        "replay": {"data": "old.jsonl", "fraction": 0.2},
        "ewc": {"data": "old.jsonl", "lambda": 5},
        "freeze": {"first_layers": 1},
        "lora": {"r": 4},
    },
    "8a171ccfd12708cfd90442faab3d7300a45966d5afb9322be332bc1ef368b366": {
        "init": {"config": "tiny-llama", "tokenizer": {"train_on": ["t.txt"]}},
        "method": "full",
        "data": "t.txt",
    },
}


@pytest.mark.parametrize("expected", list(PINNED))
def test_fingerprint_settings_unchanged_by_typed_settings(expected: str) -> None:
    assert digest(train_provenance(build_train("t", PINNED[expected]))) == expected


def test_absent_keys_take_the_trainers_defaults() -> None:
    step = build_train("t", {"base": "org/m", "data": "d.jsonl"})
    assert step.settings == TrainSettings(data=(DataSource("d.jsonl"),))
    assert step.method == "lora" and step.settings.learning_rate == pytest.approx(2e-4)
    assert step.settings.replay is None and step.settings.ewc is None
    full = build_train("t", {"base": "org/m", "method": "full", "data": "d.jsonl"}).settings
    assert full.learning_rate == pytest.approx(5e-5)
    dora = build_train("t", {"base": "org/m", "method": "dora", "data": "d.jsonl"}).settings
    assert dora.lora == LoraSettings(use_dora=True)


def test_nested_blocks_are_typed() -> None:
    s = build_train(
        "t",
        {
            "init": {"config": "tiny-qwen2", "tokenizer": {"train_on": ["c.txt"]}},
            "method": "full",
            "data": ["a.jsonl", {"path": "org/set", "split": "train"}],
            "ewc": {"data": "old.jsonl", "lambda": 5},
            "lora": {"target_modules": ["q_proj", "v_proj"]},
            "warmup_ratio": 0.1,
        },
    ).settings
    assert s.init == InitSettings("tiny-qwen2", InitTokenizer(("c.txt",), 512))
    assert s.data == (DataSource("a.jsonl"), DataSource("org/set", split="train"))
    assert s.ewc == EwcSettings((DataSource("old.jsonl"),), lam=5.0, samples=32)
    assert s.lora.target_modules == ("q_proj", "v_proj") and s.warmup == pytest.approx(0.1)


def test_lora_alpha_keeps_its_fraction() -> None:
    def alpha(value: float) -> float:
        block = {"base": "org/m", "data": "d.jsonl", "lora": {"alpha": value}}
        return build_train("t", block).settings.lora.alpha

    assert alpha(24.5) == 24.5  # the update's scale is alpha / r: a cast to int changed it
    assert alpha(32) == 32 and isinstance(alpha(32.0), int)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_schema_train_keys_equal_settings_fields() -> None:
    schema = load_schema()["definitions"]["train_step"]["properties"]
    assert set(schema) - {"base", "push_to_hub"} == _fields(TrainSettings)  # not settings
    for key in ("lora", "quantization", "prompt_tuning", "prefix_tuning", "ia3", "replay"):
        cls = type(getattr(build_train("t", {"data": "d", key: {"data": "d"}}).settings, key))
        assert set(schema[key]["properties"]) == _fields(cls), key
    assert set(schema["ewc"]["properties"]) == {"data", "lambda", "samples"}
    assert _fields(EwcSettings) == {"data", "lam", "samples"}
