"""Checkpoint: sharded and single-file layouts read lazily; hostile headers refused clearly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lossless.errors import LosslessError
from lossless.tensors.checkpoint import Checkpoint
from lossless.tensors.safetensors_header import read_header
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


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        (  # b reads a's last 4 bytes: one write would show in both tensors
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "tensors 'a' and 'b' overlap",
        ),
        (
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
            b"\0" * 8,
            "4 unused bytes before tensor 'a'",
        ),
        (
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
            b"\0" * 8,
            "4 bytes after the last tensor",
        ),
    ],
)
def test_offsets_must_tile_the_data_region(
    tmp_path: Path, header: dict, data: bytes, message: str
) -> None:
    path = _write_raw(tmp_path / "model.safetensors", header, data)
    with pytest.raises(LosslessError, match=message):
        read_header(path)


def test_non_finite_tensor_is_refused_naming_it(tmp_path: Path) -> None:
    save_file(
        {"w": torch.tensor([1.0, float("nan"), float("inf")])}, tmp_path / "model.safetensors"
    )
    with pytest.raises(
        LosslessError, match=r"tensor 'w' .* 2 non-finite value\(s\) \(1 NaN, 1 Inf\)"
    ):
        Checkpoint(tmp_path, label="m").get("w")
    assert Checkpoint(tmp_path, allow_non_finite=True).get("w").isnan().any()


def test_rows_read_for_a_streamed_merge_are_checked_too(tmp_path: Path) -> None:
    w = torch.zeros(6, 4)
    w[4, 1] = float("nan")
    save_file({"w": w}, tmp_path / "model.safetensors")
    checkpoint = Checkpoint(tmp_path, label="m")
    assert torch.equal(checkpoint.get_rows("w", 0, 2), w[:2])  # clean rows pass
    assert torch.equal(checkpoint.get_rows("w", 1, 3), w[1:3])  # re-read: checked once
    with pytest.raises(LosslessError, match=r"tensor 'w' .* 1 non-finite value\(s\) \(1 NaN"):
        checkpoint.get_rows("w", 3, 6)
    with pytest.raises(LosslessError, match="1 NaN"):  # out of order: checked on its own
        Checkpoint(tmp_path, label="m").get_rows("w", 4, 5)
    assert Checkpoint(tmp_path, allow_non_finite=True).get_rows("w", 3, 6).isnan().any()


def test_config_problems_name_key_tensor_and_sizes() -> None:
    from lossless.tensors.checkpoint import config_problems

    shapes = {"model.embed_tokens.weight": (512, 48), "model.layers.0.mlp.up_proj.weight": (96, 48)}
    config = {"hidden_size": 64, "vocab_size": 512, "intermediate_size": 96, "num_hidden_layers": 3}
    assert config_problems(config, shapes, layers=2) == [
        "config.json says hidden_size 64, but model.embed_tokens.weight is [512, 48]",
        "config.json says num_hidden_layers 3, but the weights hold 2",
    ]
