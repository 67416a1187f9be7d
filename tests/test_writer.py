"""Shard layout, sizes and the streaming writer give files safetensors and transformers read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lossless.errors import LosslessError
from lossless.tensors.sizes import parse_shard_size
from lossless.tensors.writer import ShardWriter, layout_shards, sha256_file, write_index


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5B", 5 * 10**9),
        ("500M", 500 * 10**6),
        ("1b", 10**9),
        ("1.5B", 1_500_000_000),
        ("100K", 10**5),
        ("1000", 1000),
        (42, 42),
    ],
)
def test_parse_shard_size(text: str | int, value: int) -> None:
    assert parse_shard_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "0", "-5M", "5X"])
def test_parse_shard_size_rejects(text: str) -> None:
    with pytest.raises(LosslessError, match="invalid shard size"):
        parse_shard_size(text)


def test_layout_packs_by_parameters_in_order() -> None:
    tensors = [
        ("a", (10,), "float32"),
        ("b", (5, 2), "bfloat16"),
        ("c", (3,), "float32"),
        ("d", (50,), "float32"),
    ]
    shards = layout_shards(tensors, shard_size=20)
    # a+b = 20 params fit; c starts a new shard; d alone exceeds 20 and gets its own.
    assert [[s.name for s in shard.slots] for shard in shards] == [["a", "b"], ["c"], ["d"]]
    assert [s.file for s in shards] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert [(s.begin, s.end) for s in shards[0].slots] == [(0, 40), (40, 60)]
    assert layout_shards(tensors, shard_size=10**9)[0].file == "model.safetensors"


def test_streamed_shards_match_safetensors(tmp_path: Path) -> None:
    data = {
        "x": torch.randn(3, 4),
        "y": torch.randn(5).to(torch.bfloat16),
        "z": torch.arange(7, dtype=torch.float32),
    }
    entries = [(k, tuple(v.shape), str(v.dtype)) for k, v in data.items()]
    shards = layout_shards(entries, shard_size=15)
    for shard in shards:
        writer = ShardWriter(tmp_path, shard)
        for slot in shard.slots:
            writer.write(slot.name, data[slot.name])
        sha = writer.close()
        assert sha == sha256_file(tmp_path / shard.file)
        assert (tmp_path / shard.file).stat().st_size == shard.size
    index = write_index(tmp_path, shards)
    assert index is not None
    weight_map = json.loads(index.read_text())["weight_map"]
    assert weight_map == {"x": shards[0].file, "y": shards[1].file, "z": shards[1].file}
    loaded = {}
    for shard in shards:
        loaded.update(load_file(str(tmp_path / shard.file)))
    assert loaded.keys() == data.keys()
    for k, v in data.items():
        assert torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype
    # A lone shard's bytes equal what safetensors itself would write for the same order.
    single = layout_shards([entries[0]], shard_size=100)[0]
    writer = ShardWriter(tmp_path, single)
    writer.write("x", data["x"])
    writer.close()
    loaded_x = load_file(str(tmp_path / "model.safetensors"))["x"]
    save_file({"x": data["x"]}, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    assert torch.equal(loaded_x, load_file(str(tmp_path / "ref.safetensors"))["x"])


def test_writer_rejects_wrong_shape(tmp_path: Path) -> None:
    (shard,) = layout_shards([("x", (2, 2), "float32")], shard_size=100)
    writer = ShardWriter(tmp_path, shard)
    with pytest.raises(LosslessError, match=r"the plan said \(2, 2\) F32"):
        writer.write("x", torch.zeros(3))
    writer.abort()
    assert list(tmp_path.iterdir()) == []
