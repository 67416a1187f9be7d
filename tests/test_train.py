"""train: steps on tiny models — LoRA lowers the loss and changes outputs, adapters load, full
fine-tunes write a loadable model, an interrupted run resumes from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.recipe.build import build_train
from lossless.recipe.model import TrainStep
from lossless.steps.train import run_train
from tests.factories import make_model, write_jsonl

ROWS = [{"prompt": f"add {i} {i}:", "completion": f" {2 * i}"} for i in range(8)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("world")
    base = make_model(root / "base", layers=1)
    write_jsonl(root / "data.jsonl", ROWS)
    return root, base


def _step(method: str, **settings) -> TrainStep:
    return build_train("t", {"method": method, "data": "data.jsonl", **settings})


def _logits(model_dir: Path, adapter: Path | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(torch.tensor([[5, 6, 7, 8]])).logits


def test_lora_lowers_loss_and_adapter_loads(world) -> None:
    import torch

    root, base = world
    out = root / "lora"
    m = run_train(
        _step("lora", max_steps=8, learning_rate=1e-2, batch_size=8, lora={"r": 4}),
        base_dir=base,
        out_dir=out,
        recipe_dir=root,
        quiet=True,
    )
    assert m["steps"] == 8 and m["last_loss"] < m["first_loss"]
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert (
        json.loads((out / "metrics.json").read_text())["trainable_params"]
        == m["trainable_params"]
        > 0
    )
    assert not torch.allclose(_logits(base), _logits(base, out))
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_full_writes_loadable_model_and_resumes(world) -> None:
    import shutil

    root, base = world
    out = root / "full"
    step = _step("full", max_steps=4, learning_rate=1e-3, batch_size=4, save_steps=2)
    first = run_train(step, base_dir=base, out_dir=out, recipe_dir=root, quiet=True)
    assert first["last_loss"] < first["first_loss"]
    assert (out / "model.safetensors").exists()
    _logits(out)  # loads with transformers
    # Simulate an interruption after step 2: drop the final checkpoint, run again → resumes at 2.
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    again = run_train(step, base_dir=base, out_dir=out, recipe_dir=root, quiet=False)
    assert again["resumed_from"] == "checkpoint-2" and again["steps"] == 4
    # The loss history of steps 1-2 comes back from the checkpoint; steps 3-4 were trained again.
    assert again["losses"][:2] == first["losses"][:2] and len(again["losses"]) == 4


def test_qlora_runs_a_step_on_cpu(tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", layers=1, hidden_size=64, intermediate_size=128)
    write_jsonl(tmp_path / "data.jsonl", ROWS)
    step = _step("qlora", max_steps=2, batch_size=4, quantization={"bits": 4, "quant_type": "nf4"})
    m = run_train(step, base_dir=base, out_dir=tmp_path / "q", recipe_dir=tmp_path, quiet=True)
    assert m["steps"] == 2 and (tmp_path / "q" / "adapter_model.safetensors").exists()
    _logits(base, tmp_path / "q")  # the adapter loads onto the unquantised base


def test_qlora_refuses_cpu_shapes_bitsandbytes_cannot_run(world) -> None:
    from lossless.errors import LosslessError

    root, base = world  # hidden_size 32
    with pytest.raises(LosslessError, match="divisible by 64"):
        run_train(_step("qlora", max_steps=1), base_dir=base, out_dir=root / "q", recipe_dir=root)


def test_init_preset_with_trained_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (tmp_path / "corpus.txt").write_text("the cat sat on the mat\none plus two is three\n" * 5)
    write_jsonl(tmp_path / "data.jsonl", ROWS)
    init = {
        "config": "tiny-qwen2",
        "tokenizer": {"train_on": ["corpus.txt", "data.jsonl"], "vocab_size": 300},
    }
    step = build_train(
        "t",
        {
            "method": "full",
            "init": init,
            "data": "corpus.txt",
            "packing": True,
            "max_seq_length": 16,
            "max_steps": 3,
            "learning_rate": 1e-3,
        },
    )
    m = run_train(step, base_dir=None, out_dir=tmp_path / "m", recipe_dir=tmp_path, quiet=True)
    assert m["steps"] == 3 and m["last_loss"] < m["first_loss"]
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert (
        model.config.vocab_size == len(tok)
        and len(tok) in (300, 301)
        and model.config.hidden_size == 64
    )
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.convert_tokens_to_ids("<|im_end|>") == 4  # a single special token, not bytes


def test_packing_cuts_concatenated_examples_into_blocks() -> None:
    from lossless.steps.train import pack

    docs = [[1, 2, 9], [3, 9], [4, 5, 6, 9]]
    blocks = pack([{"input_ids": d, "labels": d} for d in docs], 4)
    assert [b["input_ids"] for b in blocks] == [[1, 2, 9, 3], [9, 4, 5, 6], [9]]
    assert all(b["labels"] == b["input_ids"] for b in blocks)
    # Answer-only labels travel with their tokens: the prompt's -100 stay where they were.
    answers = pack([{"input_ids": [1, 2, 9], "labels": [-100, 2, 9]}] * 2, 4)
    assert [b["labels"] for b in answers] == [[-100, 2, 9, -100], [2, 9]]


def test_several_data_files_concatenated_and_bad_scheduler(world) -> None:
    from lossless.errors import LosslessError

    root, base = world
    write_jsonl(root / "more.jsonl", [{"text": "the cat sat"}, {"text": "the dog ate"}])
    data = ["data.jsonl", {"path": "more.jsonl", "format": "text"}]
    m = run_train(
        build_train("t", {"method": "lora", "data": data, "max_steps": 1}),
        base_dir=base,
        out_dir=root / "multi",
        recipe_dir=root,
        quiet=True,
    )
    assert m["examples"] == len(ROWS) + 2
    with pytest.raises(LosslessError, match="lr_scheduler 'cosin'"):
        run_train(
            _step("lora", max_steps=1, lr_scheduler="cosin"),
            base_dir=base,
            out_dir=root / "bad",
            recipe_dir=root,
            quiet=True,
        )


def test_dora_on_chat_data_writes_template_into_tokenizer(world) -> None:
    from transformers import AutoTokenizer

    root, base = world
    chat = [
        {
            "messages": [
                {"role": "user", "content": f"double {i}"},
                {"role": "assistant", "content": str(2 * i)},
            ]
        }
        for i in range(4)
    ]
    write_jsonl(root / "chat.jsonl", chat)
    settings = {
        "data": "chat.jsonl",
        "max_steps": 1,
        "chat_template": "chatml",
        "lora": {"r": 2, "use_rslora": True},
    }
    m = run_train(
        build_train("t", {"method": "dora", **settings}),
        base_dir=base,
        out_dir=root / "dora",
        recipe_dir=root,
        quiet=True,
    )
    config = json.loads((root / "dora" / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is True and config["r"] == 2
    assert m["examples"] == 4
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(root / "dora").chat_template


def test_tiny_models_train_on_one_thread_and_the_count_is_restored(world) -> None:
    import torch

    from lossless.steps.train import _training_threads

    root, base = world
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    run_train(_step("lora", max_steps=1), base_dir=base, out_dir=root / "t", recipe_dir=root)
    assert torch.get_num_threads() == 2  # merges later in the run keep every core
    model = torch.nn.Linear(4, 4)
    model.device = torch.device("cpu")
    model.num_parameters = lambda: 20  # a tiny model: one thread
    try:
        assert _training_threads(model) == 1
    finally:
        torch.set_num_threads(before)


def test_chat_data_packed_with_answer_only_labels_and_neftune(world) -> None:
    root, base = world
    chat = [
        {
            "messages": [
                {"role": "user", "content": f"double {i}"},
                {"role": "assistant", "content": str(2 * i)},
            ]
        }
        for i in range(8)
    ]
    write_jsonl(root / "chat_pack.jsonl", chat)
    block = {"data": "chat_pack.jsonl", "max_steps": 2, "packing": True, "max_seq_length": 64}
    m = run_train(
        build_train("t", {"method": "lora", "neftune_noise_alpha": 5, **block}),
        base_dir=base,
        out_dir=root / "packed",
        recipe_dir=root,
        quiet=True,
    )
    assert m["examples"] < len(chat) and m["steps"] == 2  # several chats per 64-token block


def test_packing_beyond_text_changes_the_fingerprint_only_where_it_changed_meaning() -> None:
    from lossless.engine.fingerprint import digest
    from lossless.engine.freshness import train_provenance

    def fp(**block) -> str:
        return digest(train_provenance(build_train("t", {"data": "d.jsonl", **block})))

    assert "packing" not in train_provenance(build_train("t", {"data": "d", "packing": False}))
    assert "packing" not in train_provenance(
        build_train("t", {"data": "d", "packing": True, "format": "text"})
    )
    assert fp(packing=True) != fp(packing=True, format="text")


def test_sharegpt_rows_train_as_chat(world) -> None:
    root, base = world
    rows = [
        {
            "conversations": [
                {"from": "human", "value": f"double {i}"},
                {"from": "gpt", "value": str(2 * i)},
            ]
        }
        for i in range(4)
    ]
    write_jsonl(root / "sharegpt.jsonl", rows)
    m = run_train(
        build_train("t", {"method": "lora", "data": "sharegpt.jsonl", "max_steps": 1}),
        base_dir=base,
        out_dir=root / "sharegpt",
        recipe_dir=root,
        quiet=True,
    )
    assert m["examples"] == 4 and m["steps"] == 1
