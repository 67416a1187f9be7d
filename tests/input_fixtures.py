"""Tiny models, adapters and data files that do not fit a recipe, for tests/invalid_inputs/.

`build_inputs(root)` writes them under `root`; each `tests/invalid_inputs/NAME.yaml` names
them by relative path (`./llama`, `./qwen2`, ...), so a copy of the recipe in `root` finds them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.factories import make_lora_adapter, make_model, write_jsonl


def _edit_json(file: Path, **changes: object) -> None:
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data, indent=2))


def build_inputs(root: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    llama = make_model(root / "llama", layers=2, seed=0)
    make_model(root / "llama-b", layers=2, seed=1)
    make_model(root / "qwen2", family="qwen2", layers=2, seed=2, hidden_size=48)
    make_model(root / "llama-514", layers=2, seed=3, vocab_size=514)
    # Another eos id and a chat template: which model gives the output its config matters.
    other = make_model(root / "llama-chat", layers=2, seed=4, eos_token_id=2)
    _edit_json(other / "tokenizer_config.json", chat_template="{{ messages }}")
    # config.json that disagrees with the weights (transformers refuses such a model).
    _edit_json(shutil.copytree(llama, root / "bad-hidden") / "config.json", hidden_size=64)
    (shutil.copytree(llama, root / "no-config") / "config.json").unlink()
    # Two tensors sharing bytes: a hostile header.
    hostile = shutil.copytree(llama, root / "overlap")
    raw = (hostile / "model.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    names = sorted(n for n in header if n != "__metadata__")
    a, b = header[names[0]], header[names[1]]
    b["data_offsets"] = [
        a["data_offsets"][0],
        a["data_offsets"][0] + b["data_offsets"][1] - b["data_offsets"][0],
    ]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (hostile / "model.safetensors").write_bytes(
        len(text).to_bytes(8, "little") + text + raw[8 + size :]
    )
    # NaN in one weight: found while the merge streams it.
    nan = shutil.copytree(llama, root / "nan")
    weights = load_file(nan / "model.safetensors")
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, nan / "model.safetensors", metadata={"format": "pt"})
    # Adapters: one whose A and B ranks disagree, one with target_modules naming nothing.
    rank = make_lora_adapter(llama, root / "lora-rank", target_modules=["q_proj"])
    tensors = load_file(rank / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    tensors[key] = tensors[key][:, :2].contiguous()
    save_file(tensors, rank / "adapter_model.safetensors")
    targets = make_lora_adapter(llama, root / "lora-targets", target_modules=["q_proj"])
    _edit_json(targets / "adapter_config.json", target_modules=["q_proj", "gate_projj"])
    make_lora_adapter(root / "qwen2", root / "lora-qwen2", target_modules=["q_proj"])
    # Training data: every prompt longer than the step's max_seq_length.
    write_jsonl(
        root / "long-prompts.jsonl",
        [{"prompt": "word " * 200, "completion": " yes"} for _ in range(4)],
    )
    (root / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    write_jsonl(root / "not-rows.jsonl", [{"text": "ok"}]).open("a").write("[1, 2]\n")
    del torch
    return root
