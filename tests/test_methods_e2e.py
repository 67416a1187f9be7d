"""Every merge method end to end through `lossless run`'s runner on tiny checkpoints, the result
loaded by transformers; differing vocabularies merged with `tokenizer_source: union`; and a
multi-stage (mergekit-multi style) file run in DAG order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from lossless.methods.table import METHODS
from tests.factories import make_model, make_tokenizer, read_tensors

WEIGHTED = {"weight": 1.0}
SPARSE = {"weight": 1.0, "density": 0.5}


def config_for(method: str) -> dict[str, Any]:
    """A small valid config of `method` over models a, b (and base)."""
    spec = METHODS[method]
    params = {
        name: SPARSE.get(name, 1.0)
        for name in spec.model_params
        if spec.model_params[name].required or name in SPARSE
    }
    models = ["a"] if spec.max_models == 1 else ["a", "b"]
    config: dict[str, Any] = {
        "models": [
            {"model": m, "parameters": dict(params)} if params else {"model": m} for m in models
        ],
        "merge_method": method,
        "dtype": "float32",
    }
    if spec.base != "unused":
        config["base_model"] = "base"
    if "t" in spec.global_params:
        config["parameters"] = {"t": 0.5}
    return config


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("methods")
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        make_model(root / name, seed=seed)
    return root


def run_recipe(path: Path, out: Path | None = None) -> None:
    from lossless.engine.runner import Runner, RunOptions
    from lossless.validation.recipe_check import load_recipe

    recipe, _ = load_recipe(path)
    Runner(recipe, RunOptions(out=out, quiet=True, seed=1)).run()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_and_loads(method: str, models: Path) -> None:
    recipe = models / f"{method}.yaml"
    recipe.write_text(yaml.safe_dump(config_for(method)))
    out = models / f"out-{method}"
    run_recipe(recipe, out)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    logits = model(torch.tensor([[1, 5, 9]])).logits
    assert torch.isfinite(logits).all()
    merged = read_tensors(out)
    assert set(merged) == set(read_tensors(models / "a"))


def test_union_vocabulary_merge(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    plain = make_model(tmp_path / "plain", seed=1)
    chat = make_model(tmp_path / "chat", seed=2, tokenizer=False, vocab_size=322)
    make_tokenizer(chat, chatml=True)
    recipe = tmp_path / "union.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"model": "plain", "parameters": {"weight": 0.5}},
                    {"model": "chat", "parameters": {"weight": 0.5}},
                ],
                "merge_method": "linear",
                "base_model": "plain",
                "tokenizer_source": "union",
                "dtype": "float32",
            }
        )
    )
    out = tmp_path / "out"
    run_recipe(recipe, out)
    conversation = "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\nsat<|im_end|>"
    merged_tok = AutoTokenizer.from_pretrained(out)
    chat_tok = AutoTokenizer.from_pretrained(chat)
    assert merged_tok(conversation).input_ids == chat_tok(conversation).input_ids
    embed = "model.embed_tokens.weight"
    merged = read_tensors(out)[embed]
    assert merged.shape[0] == 322
    p, c = read_tensors(plain)[embed], read_tensors(chat)[embed]
    token = 100  # shared, same id in both: the merge of the two rows (weights 0.5 / 0.5)
    torch.testing.assert_close(merged[token], 0.5 * p[token] + 0.5 * c[token])
    end = merged_tok.convert_tokens_to_ids("<|im_end|>")  # only `chat` has it: its own row
    torch.testing.assert_close(merged[end], c[chat_tok.convert_tokens_to_ids("<|im_end|>")])
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).vocab_size == 322


def test_union_vocabulary_streams_under_a_small_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TIES merge of re-indexed embeddings (union tokenizer, padded to 4096 rows: two 64K
    blocks) under a 1M budget reads them by rows and writes what a whole-tensor merge does."""
    from lossless import cli
    from lossless.methods import streamed as streaming

    plain = make_model(tmp_path / "plain", seed=1, dtype="bfloat16")
    chat = make_model(tmp_path / "chat", seed=2, tokenizer=False, vocab_size=322, dtype="bfloat16")
    make_tokenizer(chat, chatml=True)
    base = make_model(tmp_path / "base", seed=3, dtype="bfloat16")
    recipe = tmp_path / "union.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}}
                    for m in (plain, chat)
                ],
                "merge_method": "ties",
                "base_model": str(base),
                "tokenizer": {"source": "union", "pad_to_multiple_of": 4096},
                "dtype": "bfloat16",
            }
        )
    )
    assert cli.main(["run", str(recipe), str(tmp_path / "whole"), "-q"]) == 0
    streamed: dict[str, int] = {}
    original = streaming.stream

    def spy(method: str, rows: Any, *args: Any, **kwargs: Any) -> Any:
        streamed[rows.job.output] = kwargs["block_rows"]
        return original(method, rows, *args, **kwargs)

    monkeypatch.setattr(streaming, "stream", spy)
    assert cli.main(["run", str(recipe), str(tmp_path / "rows"), "-q", "--memory", "1M"]) == 0
    assert streamed["model.embed_tokens.weight"] < 4096  # by row blocks, not whole
    whole, rows = read_tensors(tmp_path / "whole"), read_tensors(tmp_path / "rows")
    assert whole["model.embed_tokens.weight"].shape == (4096, 32)
    assert set(whole) == set(rows)
    assert all(torch.equal(whole[n], rows[n]) for n in whole)


def test_vocabulary_mismatch_without_setting_is_explained(tmp_path: Path) -> None:
    make_model(tmp_path / "plain", seed=1)
    make_model(tmp_path / "chat", seed=2, tokenizer=False, vocab_size=322)
    make_tokenizer(tmp_path / "chat", chatml=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"model": "plain", "parameters": {"weight": 1.0}},
                    {"model": "chat", "parameters": {"weight": 1.0}},
                ],
                "merge_method": "linear",
            }
        )
    )
    from lossless.errors import RecipeInvalid

    with pytest.raises(RecipeInvalid) as caught:  # found before the run, at the recipe's line
        run_recipe(recipe, tmp_path / "out")
    (problem,) = caught.value.problems
    assert problem.code == "vocab-mismatch" and problem.line > 0
    text = f"{problem.message} {problem.hint}"
    assert "320" in text and "322" in text and "tokenizer_source" in text
    assert not (tmp_path / "out").exists()


def test_multi_stage_file_runs_in_dag_order(models: Path) -> None:
    stages = [
        {
            "name": "final",
            "models": [
                {"model": "first", "parameters": {"weight": 1.0}},
                {"model": "b", "parameters": {"weight": 1.0}},
            ],
            "merge_method": "linear",
            "dtype": "float32",
        },
        {
            "name": "first",
            "models": [
                {"model": "a", "parameters": {"weight": 1.0}},
                {"model": "base", "parameters": {"weight": 1.0}},
            ],
            "merge_method": "linear",
            "dtype": "float32",
        },
    ]
    recipe = models / "multi.yaml"
    recipe.write_text(yaml.safe_dump_all(stages))
    out = models / "multi-out"
    run_recipe(recipe, out)
    name = "model.norm.weight"
    a, b, base = (read_tensors(models / n)[name] for n in ("a", "b", "base"))
    first = read_tensors(models / ".lossless" / "multi" / "first")[
        name
    ]  # intermediate kept in the work dir
    torch.testing.assert_close(first, (a + base) / 2)
    torch.testing.assert_close(read_tensors(out)[name], (first + b) / 2)
