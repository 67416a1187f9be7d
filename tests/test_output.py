"""The output directory: loadable by transformers, complete, reproducible, and crash-safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lossless.engine.publish import MANIFEST
from lossless.engine.publish import partial_dir as temp_dir_for
from lossless.errors import LosslessError
from lossless.merge.chat_templates import CHATML, resolve_chat_template
from lossless.merge.output import build_output
from lossless.methods.table import METHODS
from lossless.tensors.checkpoint import Checkpoint
from lossless.tensors.writer import sha256_file
from tests.factories import make_model, make_tokenizer
from tests.merge_helpers import linear_plan, passthrough_plan
from tests.test_executor import NOISY, noisy_plan

RECIPE = """models:
  - model: a
    parameters: {weight: 1.0}
  - model: b
    parameters: {weight: 3.0}
merge_method: linear
dtype: bfloat16
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("out")
    paths = {
        "a": make_model(root / "a", seed=1, shard_size="20KB"),
        "b": make_model(root / "b", seed=2, dtype="bfloat16"),
        "qwen": make_model(
            root / "qwen", family="qwen2", seed=3, shard_size="20KB", tie_word_embeddings=True
        ),
    }
    (paths["a"] / "generation_config.json").write_text(json.dumps({"temperature": 0.3}))
    make_tokenizer(root / "chat_tok", chatml=True)
    paths["chat_tok"] = root / "chat_tok"
    return paths


def build(models: dict[str, Path], out: Path, **kwargs: object) -> Path:
    srcs = {k: Checkpoint(models[k], label=k) for k in ("a", "b")}
    plan = linear_plan(srcs, {"a": 1.0, "b": 3.0}, out_dtype="bfloat16")
    options: dict = dict(
        fingerprint="fp-1",
        recipe_text=RECIPE,
        input_dirs=[models["a"], models["b"]],
        tokenizer_dir=models["chat_tok"],
        chat_template=resolve_chat_template("chatml"),
        base_models=["a"],
        method="linear",
        mergekit_config=True,
        shard_size=3000,
        quiet=True,
    )
    options.update(kwargs)
    return build_output(plan, srcs, out, **options)


def test_output_is_a_complete_hf_model(models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = build(models, tmp_path / "merged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temp dir left
    names = {p.name for p in out.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors.index.json"}
    expected |= {"tokenizer.json", "tokenizer_config.json", "README.md", "lossless.yaml"}
    expected |= {"mergekit_config.yml", MANIFEST}
    assert expected <= names and "lossless-journal.jsonl" not in names
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["num_hidden_layers"] == 2
    assert json.loads((out / "generation_config.json").read_text()) == {"temperature": 0.3}
    assert (
        (out / "lossless.yaml").read_text() == RECIPE == (out / "mergekit_config.yml").read_text()
    )

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    # "a" and "b" are local models: listed by name in the body, never in `base_model` (hub ids)
    assert front == {
        "tags": ["lossless", "mergekit", "merge", "linear"],
        "library_name": "transformers",
    }
    assert "- a (local)\n- b (local)" in card
    assert yaml.safe_load(card.split("```yaml\n")[1].split("```")[0]) == yaml.safe_load(RECIPE)

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["fingerprint"] == "fp-1"
    assert set(manifest["versions"]) == {"lossless", "torch", "transformers", "safetensors"}
    assert manifest["files"] == {
        p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.name != MANIFEST
    }

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    a = AutoModelForCausalLM.from_pretrained(models["a"]).state_dict()
    b = AutoModelForCausalLM.from_pretrained(models["b"], dtype=torch.float32).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ((a[name] + 3 * b[name]) / 4).to(torch.bfloat16)), name
    logits = model(torch.tensor([[0, 5, 9, 1]])).logits
    assert logits.shape == (1, 4, 320) and torch.isfinite(logits).all()

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == CHATML
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_passthrough_qwen2_tied_gives_same_logits(models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    srcs = {"qwen": Checkpoint(models["qwen"])}
    plan = passthrough_plan(srcs, "qwen", "float32")
    out = build_output(
        plan, srcs, tmp_path / "q", fingerprint="q", recipe_text="x: 1\n", quiet=True
    )
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    original = AutoModelForCausalLM.from_pretrained(models["qwen"])(ids).logits
    merged = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.equal(original, merged)
    assert "```yaml\nx: 1\n```" in (out / "README.md").read_text()
    assert "lm_head.weight" not in Checkpoint(out).tensor_names()  # tied to the embedding


def test_same_inputs_and_seed_give_identical_files(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "noisy", NOISY)
    manifests = []
    for run in ("one", "two"):
        srcs = {"a": Checkpoint(models["a"])}
        out = build_output(
            noisy_plan(srcs),
            srcs,
            tmp_path / run / "m",
            fingerprint="f",
            recipe_text="r\n",
            seed=11,
            quiet=True,
        )
        manifests.append(json.loads((out / MANIFEST).read_text()))
    assert manifests[0] == manifests[1]
    assert "model.safetensors" in manifests[0]["files"]


def test_failure_mid_merge_leaves_no_output_then_rerun_finishes(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "noisy", NOISY)
    srcs = {"a": Checkpoint(models["a"])}
    target = tmp_path / "merged"
    with pytest.raises(RuntimeError, match="injected failure"):
        build_output(
            noisy_plan(srcs, fail=True), srcs, target, fingerprint="f", recipe_text="r", quiet=True
        )
    assert not target.exists()
    assert temp_dir_for(target, "f").is_dir()  # kept for a resume, under a name nobody loads
    build_output(noisy_plan(srcs), srcs, target, fingerprint="f", recipe_text="r", quiet=True)
    assert (target / MANIFEST).is_file() and not temp_dir_for(target, "f").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_chat_template_needs_a_tokenizer(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(LosslessError, match="no tokenizer is copied"):
        build(models, tmp_path / "m", tokenizer_dir=None)
    assert not list(tmp_path.iterdir())  # refused before merging anything


def test_a_tokenizer_dir_without_a_tokenizer_stops_before_merging(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def merged(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor was merged before the tokenizer was checked")

    monkeypatch.setattr("lossless.merge.output.execute", merged)
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    (weights_only / "tokenizer.json").write_text("{}")  # no tokenizer_config.json beside it
    with pytest.raises(
        LosslessError, match=r"no tokenizer in .*weights-only \(no tokenizer_config\.json\)"
    ) as e:
        build(models, tmp_path / "m", tokenizer_dir=weights_only, chat_template=None)
    assert "--no-copy-tokenizer" in (e.value.hint or "")
    assert [p.name for p in tmp_path.iterdir()] == ["weights-only"]


def test_replaces_an_older_output(models: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "merged"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    build(models, target)
    assert not (target / "stale.txt").exists() and (target / MANIFEST).is_file()


def test_refuses_to_write_over_an_input(models: dict[str, Path], tmp_path: Path) -> None:
    for target in (models["a"], models["a"].parent):
        with pytest.raises(LosslessError, match="is or contains the input"):
            build(models, target)
    assert (models["a"] / "config.json").is_file()


def test_model_card_without_base_and_with_lock() -> None:
    from lossless.merge.model_card import render_model_card

    lock = '{"inputs": {"org/x": {"commit": "abc123"}}, "lossless_lock": 1}\n'
    card = render_model_card("a: 1\n", name="m", lock_text=lock)
    front = yaml.safe_load(card.split("---")[1])
    assert front == {"tags": ["lossless", "mergekit", "merge"], "library_name": "transformers"}
    blocks = [b.split("```")[0] for b in card.split("```yaml\n")[1:]]
    assert [yaml.safe_load(b) for b in blocks] == [{"a": 1}]
    # the lock sits in a json block where `lossless run hub:org/name` finds it again
    import tempfile
    from pathlib import Path

    from lossless.hub.reproduce import find_lock

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "README.md").write_text(card)
        assert find_lock(Path(tmp)) == lock
