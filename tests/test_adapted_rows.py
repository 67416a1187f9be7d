"""Adapted tensors read by rows: the same bits as the whole tensor, whatever the row ranges.

Chunks are made tiny here (adapted.CHUNK_ENTRIES) so that a tiny tensor spans many canonical
chunks and the row ranges asked for start and end inside them; a merge streamed under a tiny
memory budget then never reads an adapted tensor whole and writes the bytes of a whole merge.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.tensors import adapted
from lossless.tensors.adapted import AdaptedSource, chunk_rows
from lossless.tensors.adapters import load_adapter
from lossless.tensors.checkpoint import Checkpoint
from tests.factories import make_lora_adapter, make_model, read_tensors
from tests.test_adapters import peft_merged

ADAPTERS: dict[str, dict[str, Any]] = {
    "lora": dict(target_modules=["q_proj", "v_proj", "lm_head", "embed_tokens"]),
    "dora": dict(target_modules=["q_proj", "lm_head"], use_dora=True),  # norms per row
    "embedding_dora": dict(target_modules=["embed_tokens"], use_dora=True),  # per column
    "modules_to_save": dict(target_modules=["q_proj"], modules_to_save=["lm_head"]),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapted_rows")
    base = make_model(root / "base", seed=0, tokenizer=False)
    found = {
        "base": base,
        "instruct": make_model(root / "instruct", seed=1, tokenizer=False, dtype="bfloat16"),
        "gpt2": make_model(root / "gpt2", family="gpt2", seed=0, tokenizer=False),
    }
    for i, (name, kwargs) in enumerate(ADAPTERS.items()):
        found[name] = make_lora_adapter(base, root / name, seed=10 + i, **kwargs)
    # GPT-2's Conv1D stores W as [in, out]: its DoRA norms run down the stored columns
    found["gpt2_dora"] = make_lora_adapter(
        found["gpt2"], root / "gpt2_dora", seed=20, target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True, use_dora=True,
    )  # fmt: skip
    return found


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapted, "CHUNK_ENTRIES", 64)  # 32 columns → chunks of 2 rows


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.uint8)


class CountingCheckpoint(Checkpoint):
    """A checkpoint that records which tensors were read whole."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.whole: list[str] = []

    def get(self, name: str) -> torch.Tensor:
        self.whole.append(name)
        return super().get(name)


def ranges(rows: int, block: int) -> Iterator[tuple[int, int]]:
    return ((lo, min(lo + block, rows)) for lo in range(0, rows, block))


def assert_rows_are_the_whole(source: AdaptedSource, base: CountingCheckpoint) -> None:
    """For every tensor the adapters touch: row blocks of several sizes, and ranges that start
    and end inside chunks, concatenate to the bits of `get`, without reading the base whole."""
    targets = sorted({n for adapter, _ in source.adapters for n in adapter.targets})
    assert targets
    for name in targets:
        whole = source.get(name)
        rows = whole.shape[0]
        base.whole.clear()
        for block in (1, 3, 8, 50, rows):
            parts = [source.get_rows(name, lo, hi) for lo, hi in ranges(rows, block)]
            got = torch.cat([p for p in parts if p is not None])
            assert got.dtype == whole.dtype, name
            assert torch.equal(bits(got), bits(whole)), (name, block)
        for lo, hi in [(1, 2), (3, 10), (rows - 3, rows), (5, 5)]:
            part = source.get_rows(name, lo, hi)
            assert part is not None and torch.equal(bits(part), bits(whole[lo:hi])), (name, lo)
        assert base.whole == [], name  # rows of the base only


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_rows_of_one_adapter_are_the_whole_tensor_bit_for_bit(
    files: dict[str, Path], kind: str, tiny_chunks: None
) -> None:
    base = CountingCheckpoint(files["instruct"])  # bf16: computed in float32, cast back
    source = AdaptedSource(base, [(load_adapter(files[kind]), 1.0)], label=kind)
    assert_rows_are_the_whole(source, base)


def test_rows_of_a_fan_in_fan_out_dora_are_the_whole_tensor(
    files: dict[str, Path], tiny_chunks: None
) -> None:
    base = CountingCheckpoint(files["gpt2"])
    source = AdaptedSource(base, [(load_adapter(files["gpt2_dora"]), 1.0)], label="gpt2")
    assert_rows_are_the_whole(source, base)


def test_rows_of_two_weighted_adapters_are_the_whole_tensor(
    files: dict[str, Path], tiny_chunks: None
) -> None:
    base = CountingCheckpoint(files["base"])
    pairs = [
        (load_adapter(files["lora"]), 0.5),
        (load_adapter(files["embedding_dora"]), 2.0),  # both on embed_tokens
        (load_adapter(files["dora"]), 0.7),
    ]
    assert_rows_are_the_whole(AdaptedSource(base, pairs, label="three"), base)


class Tensors:
    """Plain tensors as a TensorSource that reads rows."""

    label, config = "tensors", {}

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.whole: list[str] = []

    def tensor_names(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def dtype(self, name: str) -> str:
        return "F32"

    def get(self, name: str) -> torch.Tensor:
        self.whole.append(name)
        return self.tensors[name]

    def get_rows(self, name: str, lo: int, hi: int) -> torch.Tensor:
        return self.tensors[name][lo:hi].clone()


@pytest.mark.parametrize("transposed", [False, True])
def test_rows_of_a_wide_lora_are_the_whole_tensor(
    transposed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sizes where a BLAS product of one row of B·A (a matrix-vector kernel) does not give the
    bits of that row of the whole product: the canonical chunks make them agree anyway."""
    from lossless.tensors.adapters import Adapter, LoraFactors

    g = torch.Generator().manual_seed(0)
    rows, r, cols = 1000, 8, 777
    weight = torch.randn(rows, cols, generator=g)
    a, b = torch.randn(r, cols, generator=g), torch.randn(rows, r, generator=g)
    if transposed:  # an Embedding: A is [r, vocab], B is [dim, r], W is [vocab, dim]
        a, b = torch.randn(r, rows, generator=g), torch.randn(cols, r, generator=g)
    factors = LoraFactors("w", a=a, b=b, scale=0.5, embedding=transposed)
    adapter = Adapter(path=Path("x"), config={}, lora={"w": factors})
    base = Tensors(w=weight)
    source = AdaptedSource(base, [(adapter, 1.0)], label="wide")  # type: ignore[arg-type]
    monkeypatch.setattr(adapted, "CHUNK_ENTRIES", 16 * cols)
    assert chunk_rows(weight.shape) == 16
    whole = source.get("w")
    torch.testing.assert_close(whole, weight + factors.delta(), atol=1e-5, rtol=1e-5)
    base.whole.clear()
    for block in (1, 3, 16, 300):
        parts = [source.get_rows("w", lo, hi) for lo, hi in ranges(rows, block)]
        assert torch.equal(bits(torch.cat(parts)), bits(whole)), block  # type: ignore[misc]
    assert base.whole == []


@pytest.mark.parametrize("kind", ["embedding_dora", "dora", "modules_to_save"])
def test_chunked_tensor_still_equals_peft_merge(
    files: dict[str, Path], kind: str, tiny_chunks: None
) -> None:
    """Column norms summed over 160 chunks, row norms per chunk: still peft's merged weights."""
    base = Checkpoint(files["base"])
    source = AdaptedSource(base, [(load_adapter(files[kind]), 1.0)], label=kind)
    expected = peft_merged(files["base"], files[kind])
    for name in sorted(load_adapter(files[kind]).targets):
        torch.testing.assert_close(source.get(name), expected[name], atol=2e-6, rtol=1e-5)


def test_a_tensor_saved_whole_is_read_by_the_rows_asked_for(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tiny_chunks: None
) -> None:
    """modules_to_save (an lm_head: 4 GiB in float32 at Llama-3-70B's size) is not loaded with
    the adapter: a block of rows reads those rows of the adapter file, and equals peft's."""
    from lossless.tensors import adapter_file

    reads: list[tuple[int, int]] = []
    original = adapter_file.SavedTensor.rows

    def spy(self: adapter_file.SavedTensor, lo: int, hi: int) -> torch.Tensor:
        if "lm_head" in self.label:
            reads.append((lo, hi))
        return original(self, lo, hi)

    monkeypatch.setattr(adapter_file.SavedTensor, "rows", spy)
    adapter = load_adapter(files["modules_to_save"])
    assert reads == []  # loading reads the LoRA factors only
    source = AdaptedSource(Checkpoint(files["base"]), [(adapter, 1.0)], label="m")
    expected = peft_merged(files["base"], files["modules_to_save"])["lm_head.weight"]
    rows = source.get_rows("lm_head.weight", 40, 48)
    assert rows is not None
    torch.testing.assert_close(rows, expected[40:48], atol=2e-6, rtol=1e-5)
    assert reads and all(hi - lo < expected.shape[0] for lo, hi in reads)


def test_chunks_divide_the_streamed_row_alignment() -> None:
    from lossless.methods.blocks import row_alignment

    assert chunk_rows((128256, 8192)) == 8  # the 64K entries of one aligned block
    assert chunk_rows((10, 4097)) == 32  # odd columns: 256K / 4097 = 63 → 32 rows
    assert chunk_rows((320, 32)) == 2048
    for shape in [(128256, 8192), (10, 4097), (3072, 768), (5, 1 << 20), (7,)]:
        assert row_alignment(shape) % chunk_rows(shape) == 0, shape


def test_a_base_that_cannot_read_rows_is_read_whole(files: dict[str, Path], tmp_path: Path) -> None:
    """A pickle checkpoint has no row reads: None tells JobRows to read the tensor whole."""
    import shutil

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(files["base"] / "config.json", pickled / "config.json")
    torch.save(read_tensors(files["base"]), pickled / "pytorch_model.bin")
    adapter = load_adapter(files["lora"])
    source = AdaptedSource(Checkpoint(pickled, allow_pickle=True), [(adapter, 1.0)], label="p")
    name = "lm_head.weight"
    assert source.get_rows(name, 0, 4) is None
    safe = AdaptedSource(Checkpoint(files["base"]), [(adapter, 1.0)], label="s")
    assert torch.equal(source.get(name), safe.get(name))


def test_working_bytes_are_a_few_float32_chunks_and_shrink_the_blocks() -> None:
    from lossless.merge.budget import QUEUED_BLOCKS, block_rows, row_bytes, streamed_bytes

    class Shapes:
        label, config = "big", {}

        def shape(self, name: str) -> tuple[int, ...]:
            return (128256, 8192)

        def dtype(self, name: str) -> str:
            return "BF16"

    name = "model.embed_tokens.weight"
    targets: Any = SimpleNamespace(targets={name})  # an adapter, as far as planning goes
    source: Any = AdaptedSource(Shapes(), [(targets, 1.0)], label="big")  # type: ignore[arg-type]
    assert source.working_bytes(name) == adapted.CHUNK_COPIES * 4 * 8 * 8192
    assert source.working_bytes("lm_head.weight") == 0
    job = TensorJob(
        output=name,
        method="ties",
        sources=(TensorRef("b", name),),
        base=TensorRef("a", name),
        model_params=({"weight": 1.0, "density": 0.5},),
        shape=(128256, 8192),
        out_dtype="bfloat16",
    )
    plain: Any = {"a": Shapes(), "b": Shapes()}
    lazy: Any = {"a": Shapes(), "b": source}
    share = 64 << 20
    assert block_rows(job, lazy, share) < block_rows(job, plain, share)
    rows = block_rows(job, lazy, share)
    assert streamed_bytes(job, lazy, job.shape, rows, share) <= share
    per_row = row_bytes(job, lazy, job.shape)
    assert streamed_bytes(job, lazy, job.shape, rows, share) == (
        (QUEUED_BLOCKS + 2) * rows * per_row + source.working_bytes(name)
    )


# -- a merge of a base+LoRA model, streamed ------------------------------------------------------

WIDE = dict(hidden_size=256, intermediate_size=128, vocab_size=1024)  # 256-row aligned blocks


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapted_merge")
    base = make_model(root / "base", seed=0, tokenizer=False, **WIDE)
    targets = ["embed_tokens", "lm_head", "q_proj"]
    return {
        "base": base,
        "instruct": make_model(root / "instruct", seed=1, tokenizer=False, **WIDE),
        "lora": make_lora_adapter(base, root / "lora", seed=5, target_modules=targets),
        "dora": make_lora_adapter(
            base, root / "dora", seed=6, target_modules=targets, use_dora=True
        ),
    }


def _plan(method: str, names: list[str], shapes: dict[str, tuple[int, ...]]) -> MergePlan:
    ties = method == "ties"
    jobs = tuple(
        TensorJob(
            output=name,
            method=method,
            sources=(TensorRef("adapted", name), TensorRef("instruct", name)),
            base=TensorRef("base", name) if ties else None,
            model_params=({"weight": 0.7, "density": 0.5}, {"weight": 0.3, "density": 0.5})
            if ties
            else ({"weight": 1.0}, {"weight": 0.0}),
            params={"normalize": True} if ties else {},
            shape=shapes[name],
        )
        for name in names
    )
    return MergePlan(jobs=jobs, config_source="base")


@pytest.mark.parametrize(
    ("method", "kind"), [("ties", "lora"), ("ties", "dora"), ("linear", "dora")]
)
def test_a_merge_of_an_adapted_model_streams_its_rows_and_writes_the_same_bytes(
    wide: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    kind: str,
) -> None:
    from lossless.merge.executor import execute
    from tests.test_executor import hashes

    lazy = AdaptedSource(
        Checkpoint(wide["instruct"]), [(load_adapter(wide[kind]), 1.0)], label="adapted"
    )
    srcs: dict[str, Any] = {
        "adapted": lazy,
        "instruct": Checkpoint(wide["instruct"]),
        "base": Checkpoint(wide["base"]),
    }
    names = lazy.tensor_names()
    plan = _plan(method, names, {n: lazy.shape(n) for n in names})
    execute(plan, srcs, tmp_path / "whole", shard_size=10**9, seed=1, quiet=True, memory=8 << 30)

    targets = {n for adapter, _ in lazy.adapters for n in adapter.targets}
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= targets
    reads: list[tuple[str, int, int]] = []
    whole_get, rows_get = AdaptedSource.get, AdaptedSource.get_rows

    def get(self: AdaptedSource, name: str) -> torch.Tensor:
        assert name not in targets, f"{name} read whole"
        return whole_get(self, name)

    def get_rows(self: AdaptedSource, name: str, lo: int, hi: int) -> torch.Tensor | None:
        reads.append((name, lo, hi))
        return rows_get(self, name, lo, hi)

    monkeypatch.setattr(AdaptedSource, "get", get)
    monkeypatch.setattr(AdaptedSource, "get_rows", get_rows)
    execute(plan, srcs, tmp_path / "rows", shard_size=10**9, seed=1, quiet=True, memory=16 << 10)
    embedding = [(lo, hi) for name, lo, hi in reads if name == "model.embed_tokens.weight"]
    assert max(hi - lo for lo, hi in embedding) < 1024  # never the whole 1024 rows
    assert {hi for _, hi in embedding} >= {256, 512, 768, 1024}
    assert hashes(tmp_path / "whole") == hashes(tmp_path / "rows")

    if method == "linear":  # weight 1 on the adapted model: peft's own merged weights
        written = read_tensors(tmp_path / "rows")
        expected = peft_merged(wide["instruct"], wide[kind])
        for name in sorted(targets):
            torch.testing.assert_close(written[name], expected[name], atol=1e-6, rtol=1e-6)
        assert math.prod(written["lm_head.weight"].shape) == 1024 * 256
