"""Checkpoint: sharded and single-file layouts read lazily; hostile headers refused clearly."""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lossless.errors import LosslessError
from lossless.tensors import checkpoint
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


KINDS = {"BF16": np.int16, "F32": np.int32}


def write_odd_layout(folder: Path) -> dict[str, torch.Tensor]:
    """A safetensors file whose float32 starts after 3 bf16 entries (an offset safetensors
    itself never lays out), beside aligned tensors and an empty one."""
    tensors = {
        "a_odd": torch.randn(3).to(torch.bfloat16),
        "b_f32": torch.randn(4097),
        "c_bf16": torch.randn(64, 65).to(torch.bfloat16),
        "d_empty": torch.zeros(0, 4),
        "e_f16": torch.randn(5).half(),
    }
    names = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}
    header, data = {}, b""
    for name, tensor in tensors.items():
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        offsets = [len(data), len(data) + len(raw)]
        header[name] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": offsets,
        }
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)
    return tensors


def test_read_bits_are_the_tensors_bits_mapped_or_copied(tmp_path: Path) -> None:
    """An aligned tensor is a copy-on-write map of the file; one whose bytes start at an odd
    offset is read into a new array; both are the bits."""
    tensors = write_odd_layout(tmp_path)
    ckpt = Checkpoint(tmp_path)
    for name in ("a_odd", "b_f32", "c_bf16", "d_empty"):
        bits = ckpt.read_bits(name, KINDS)
        assert bits is not None and bits.ndim == 1 and bits.flags.writeable
        want = tensors[name].reshape(-1).view(torch.int16 if bits.itemsize == 2 else torch.int32)
        assert np.array_equal(bits, want.numpy()), name
    mapped = ckpt.read_bits("c_bf16", KINDS).base  # type: ignore[union-attr]
    assert isinstance(mapped, memoryview) and isinstance(mapped.obj, mmap.mmap)
    assert ckpt.read_bits("b_f32", KINDS).base is None  # type: ignore[union-attr]
    assert ckpt.read_bits("e_f16", KINDS) is None  # not a kind asked for


def test_tensors_are_mapped_where_aligned_and_read_where_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors = write_odd_layout(tmp_path)
    copied: list[int] = []
    pread_into = checkpoint._pread_into
    monkeypatch.setattr(checkpoint, "_pread_into", lambda *a: copied.append(1) or pread_into(*a))
    ckpt = Checkpoint(tmp_path)
    for name, tensor in tensors.items():
        copied.clear()
        got = ckpt.get(name)
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), name
        # the float32 after 3 bf16 entries is read; the empty one is made; the rest mapped
        assert bool(copied) == (name in ("b_f32", "d_empty")), name
    rows = ckpt.get_rows("c_bf16", 10, 20)
    assert rows is not None and torch.equal(rows, tensors["c_bf16"][10:20])


def test_a_file_that_cannot_be_mapped_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors = write_odd_layout(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(19, "No such device")  # ENODEV: a file system without mmap

    monkeypatch.setattr(mmap, "mmap", refuse)
    ckpt = Checkpoint(tmp_path)
    assert torch.equal(ckpt.get("c_bf16"), tensors["c_bf16"])
    bits = ckpt.read_bits("c_bf16", KINDS)
    assert bits is not None and bits.base is None
    assert np.array_equal(bits, tensors["c_bf16"].reshape(-1).view(torch.int16).numpy())


def test_a_mapped_tensor_written_to_never_writes_the_file(tmp_path: Path) -> None:
    save_file({"w": torch.randn(64, 64).to(torch.bfloat16)}, tmp_path / "model.safetensors")
    before = (tmp_path / "model.safetensors").read_bytes()
    ckpt = Checkpoint(tmp_path)
    original = ckpt.get("w").clone()
    tensor = ckpt.get("w")
    tensor.mul_(3).add_(1)
    assert not torch.equal(tensor, original)
    assert torch.equal(ckpt.get("w"), original)  # another read, while the first is mapped
    del tensor
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_read_bits_never_writes_the_file(tmp_path: Path) -> None:
    save_file({"w": torch.randn(4096).to(torch.bfloat16)}, tmp_path / "model.safetensors")
    before = (tmp_path / "model.safetensors").read_bytes()
    bits = Checkpoint(tmp_path).read_bits("w", KINDS)
    assert bits is not None
    bits[:] = 7
    del bits
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_read_bits_of_a_file_cut_short_since_it_was_opened(tmp_path: Path) -> None:
    save_file({"w": torch.randn(4096).to(torch.bfloat16)}, tmp_path / "model.safetensors")
    ckpt = Checkpoint(tmp_path)
    file = tmp_path / "model.safetensors"
    os.truncate(file, file.stat().st_size - 100)
    with pytest.raises(LosslessError, match=r"model\.safetensors: file ended while reading"):
        ckpt.read_bits("w", KINDS)
    with pytest.raises(LosslessError, match=r"model\.safetensors: file ended while reading"):
        ckpt.get("w")


def test_read_bits_of_a_pickle_is_none(tmp_path: Path) -> None:
    torch.save({"w": torch.arange(6.0)}, tmp_path / "pytorch_model.bin")
    assert Checkpoint(tmp_path, allow_pickle=True).read_bits("w", KINDS) is None
