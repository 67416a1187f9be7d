"""Shard layout, sizes and the streaming writer give files safetensors and transformers read."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lossless.errors import LosslessError
from lossless.tensors.output_shards import OutputShards
from lossless.tensors.sizes import parse_shard_size
from lossless.tensors.writer import ShardSpec, layout_shards, sha256_file, write_index


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


def _shards(tmp_path: Path, shards: list[ShardSpec]) -> tuple[OutputShards, dict[str, str]]:
    done: dict[str, str] = {}
    return OutputShards(tmp_path, shards, lambda spec, sha: done.update({spec.file: sha})), done


def test_shards_written_by_position_match_safetensors(tmp_path: Path) -> None:
    data = {
        "x": torch.randn(3, 4),
        "y": torch.randn(5).to(torch.bfloat16),
        "z": torch.arange(7, dtype=torch.float32),
    }
    entries = [(k, tuple(v.shape), str(v.dtype)) for k, v in data.items()]
    shards = layout_shards(entries, shard_size=15)
    out, done = _shards(tmp_path, shards)
    # in reverse order, x as blocks of rows, the last block first
    out.write("z", data["z"])
    out.write("y", data["y"])
    out.write("x", data["x"][2:], first_row=2)
    out.write("x", data["x"][:2], first_row=0)
    out.finish()
    for shard in shards:
        assert done[shard.file] == sha256_file(tmp_path / shard.file)
        assert (tmp_path / shard.file).stat().st_size == shard.size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s.file for s in shards)
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
    # A lone shard's bytes equal what safetensors itself writes for the same tensor.
    single = layout_shards([entries[0]], shard_size=100)
    (tmp_path / "one").mkdir()
    out, _ = _shards(tmp_path / "one", single)
    out.write("x", data["x"])
    out.finish()
    save_file({"x": data["x"]}, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    ours = (tmp_path / "one" / "model.safetensors").read_bytes()
    assert load_file(str(tmp_path / "one" / "model.safetensors"))["x"].equal(data["x"])
    assert ours[8 + int.from_bytes(ours[:8], "little") :] == data["x"].numpy().tobytes()


def test_blocks_from_many_threads_in_any_order_give_the_same_file(tmp_path: Path) -> None:
    big = torch.randn(512, 64)
    small = torch.randn(3).to(torch.bfloat16)
    entries = [("a", (3,), "torch.bfloat16"), ("big", (512, 64), "torch.float32")]
    shards = layout_shards(entries, shard_size=10**9)
    (tmp_path / "threads").mkdir()
    done: dict[str, str] = {}
    written: list[int] = []  # what a progress bar is told, from the writing threads
    out = OutputShards(
        tmp_path / "threads",
        shards,
        lambda spec, sha: done.update({spec.file: sha}),
        written.append,
    )
    starts = list(range(0, 512, 16))
    random.Random(0).shuffle(starts)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda lo: out.write("big", big[lo : lo + 16], first_row=lo), starts))
    out.write("a", small)
    out.finish()
    save_file(
        {"a": small, "big": big}, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"}
    )
    got = tmp_path / "threads" / "model.safetensors"
    header = 8 + int.from_bytes(got.read_bytes()[:8], "little")
    loaded = load_file(str(got))
    assert torch.equal(loaded["big"], big) and torch.equal(loaded["a"], small)
    assert (
        got.read_bytes()[header:]
        == small.view(torch.uint8).numpy().tobytes() + big.numpy().tobytes()
    )
    assert done["model.safetensors"] == sha256_file(got)
    assert sorted(written) == [6] + [16 * 64 * 4] * 32  # a's bytes, then each block's


def test_a_wrong_block_a_second_write_and_missing_bytes_are_refused(tmp_path: Path) -> None:
    shards = layout_shards([("x", (2, 2), "float32"), ("y", (4,), "float32")], shard_size=100)
    out, done = _shards(tmp_path, shards)
    with pytest.raises(LosslessError, match=r"'x' is \(3,\) F32, the plan said \(2, 2\) F32"):
        out.write("x", torch.zeros(3))
    with pytest.raises(LosslessError, match=r"a block of rows from 1 is \(2, 2\) F32"):
        out.write("x", torch.zeros(2, 2), first_row=1)  # one row past the end
    out.write("x", torch.zeros(1, 2), first_row=1)
    with pytest.raises(RuntimeError, match="written twice"):
        out.write("x", torch.zeros(1, 2), first_row=1)
    with pytest.raises(RuntimeError, match=r"left incomplete: model\.safetensors"):
        out.finish()  # row 0 of x and all of y were never written
    out.abort()
    assert list(tmp_path.iterdir()) == [] and done == {}


def test_abort_deletes_the_partial_shards_and_keeps_the_finished_ones(tmp_path: Path) -> None:
    shards = layout_shards([("x", (4,), "float32"), ("y", (4,), "float32")], shard_size=4)
    out, done = _shards(tmp_path, shards)
    out.write("x", torch.ones(4))  # the first shard, whole: hashed and renamed
    deadline = time.monotonic() + 10
    while shards[0].file not in done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / (shards[1].file + ".partial")).exists() is False  # y not begun
    out.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == [shards[0].file]
