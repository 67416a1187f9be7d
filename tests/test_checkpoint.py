"""Checkpoint: sharded and single-file layouts read lazily; hostile headers refused clearly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lossless.errors import LosslessError
from lossless.tensors.checkpoint import Checkpoint, read_header
from tests.factories import make_model, read_tensors


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "single": make_model(root / "single", tokenizer=False),
        "sharded": make_model(
            root / "sharded", dtype="bfloat16", shard_size="20KB", tokenizer=False
        ),
    }


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_reads_every_tensor_as_saved(models: dict[str, Path], layout: str) -> None:
    path = models[layout]
    expected = read_tensors(path)
    ckpt = Checkpoint(path)
    assert sorted(ckpt.tensor_names()) == sorted(expected)
    if layout == "sharded":
        assert (path / "model.safetensors.index.json").is_file()
        assert len(list(path.glob("model-*.safetensors"))) > 1
    for name, tensor in expected.items():
        assert ckpt.shape(name) == tuple(tensor.shape)
        assert ckpt.dtype(name) == ("BF16" if layout == "sharded" else "F32")
        assert torch.equal(ckpt.get(name), tensor)
    assert ckpt.config["num_hidden_layers"] == 2
    assert len(ckpt._handles) == len(set(ckpt._where.values()))  # one handle per shard


def _write_raw(
    path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None
) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "length", "message"),
    [
        ({}, b"", 2**60, "exceeds the"),
        ({}, b"", 1000, "runs past the end"),
        (b"{not json", b"", None, "not valid JSON"),
        (
            {"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 8,
            None,
            "unknown dtype",
        ),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "outside"),
        (
            {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}},
            b"\0" * 8,
            None,
            "needs 16",
        ),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "shape"),
        ([1, 2], b"", None, "not a JSON object"),
    ],
)
def test_hostile_headers_fail_clearly(
    tmp_path: Path, header: dict | bytes, data: bytes, length: int | None, message: str
) -> None:
    path = _write_raw(tmp_path / "model.safetensors", header, data, length)  # type: ignore[arg-type]
    with pytest.raises(LosslessError, match=message) as info:
        read_header(path)
    assert str(path) in str(info.value)
    with pytest.raises(LosslessError, match=message):
        Checkpoint(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(LosslessError, match="shorter than the 8-byte"):
        Checkpoint(tmp_path)


def test_index_naming_missing_shard(tmp_path: Path) -> None:
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(LosslessError, match=r"model-00001-of-00002\.safetensors"):
        Checkpoint(tmp_path)


def test_pickle_refused_unless_allowed(tmp_path: Path) -> None:
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(weights, tmp_path / "pytorch_model.bin")
    with pytest.raises(LosslessError, match="--allow-pickle"):
        Checkpoint(tmp_path)
    ckpt = Checkpoint(tmp_path, allow_pickle=True)
    assert ckpt.tensor_names() == ["w"]
    assert ckpt.dtype("w") == "F32" and ckpt.shape("w") == (2, 3)
    assert torch.equal(ckpt.get("w"), weights["w"])


def test_empty_dir_and_unknown_tensor(tmp_path: Path) -> None:
    with pytest.raises(LosslessError, match=r"no model\.safetensors"):
        Checkpoint(tmp_path)
    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(LosslessError, match="has no tensor 'x'"):
        Checkpoint(tmp_path, label="base").get("x")
