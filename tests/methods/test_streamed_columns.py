"""Streamed nuslerp over columns (`nuslerp_row_wise`) and arcee_fusion give the whole-tensor
path's bits whatever the block rows: per-column dot products and the importance sample are
gathered block by block in the order the whole tensor uses."""

from __future__ import annotations

import pytest
import torch

from lossless.merge.executor import execute
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.methods import arcee_fusion, blocks, slerp, streamed
from lossless.methods.table import METHODS
from tests.factories import make_model, read_tensors
from tests.methods.test_streamed import COLS, ROWS, _smooth, streamed_bf16
from tests.test_executor import hashes, sources

COLUMNS = {"nuslerp_flatten": False, "nuslerp_row_wise": True}
WEIGHTS = [{"weight": 0.3}, {"weight": 0.6}]


def _whole(method, models, base, model_params, params, dtype, seed=None):
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    cast = [m.to(dtype) for m in models]
    base = None if base is None else base.to(dtype)
    fn = METHODS[method].load()
    return fn(cast, base, model_params, params, generator=generator).to(torch.bfloat16)


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nuslerp_columns_streamed_equal_whole(with_base: bool, dtype: torch.dtype) -> None:
    base = _smooth(0) if with_base else None
    models = [_smooth(1), _smooth(2)]
    whole = _whole("nuslerp", models, base, WEIGHTS, COLUMNS, dtype)
    for block_rows in (16, 32):
        got = streamed_bf16("nuslerp", models, base, WEIGHTS, COLUMNS, dtype, block_rows)
        assert torch.equal(got, whole), block_rows


def test_nuslerp_columns_of_a_3d_tensor_streamed_equal_whole() -> None:
    """Vectors along dim 0, one per (dim 1, dim 2) position; a block of 3 rows does not fill the
    fixed row chunks of the sums, which wait for the next block."""
    g = torch.Generator().manual_seed(7)
    models = [torch.randn(10, 24, 700, generator=g) for _ in range(2)]
    whole = _whole("nuslerp", models, None, WEIGHTS, COLUMNS, torch.float32)
    for block_rows in (1, 3, 4):
        got = streamed_bf16("nuslerp", models, None, WEIGHTS, COLUMNS, torch.float32, block_rows)
        assert torch.equal(got, whole), block_rows
    # each (i, j) column is its own slerp: compare one with the closed form, in float64
    a, b = (m[:, 5, 123].double() for m in models)
    t = 0.6 / 0.9
    theta = torch.arccos(a @ b / (a.norm() * b.norm()))
    expected = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
    torch.testing.assert_close(whole[:, 5, 123].double(), expected, atol=1e-2, rtol=1e-2)


def test_column_dots_do_not_depend_on_the_blocks() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(200, 300, generator=g), torch.randn(200, 300, generator=g)
    whole = slerp.ColumnDots()
    whole.add(a, b)
    blocks = slerp.ColumnDots()  # chunks of 54 rows (54 × 300 < SERIAL); blocks across them
    for lo, hi in [(0, 7), (7, 8), (8, 60), (60, 200)]:
        blocks.add(a[lo:hi], b[lo:hi])
    assert torch.equal(whole.totals()[1], blocks.totals()[1])
    a, b = a.double(), b.double()
    expected = torch.stack([(a * a).sum(0), (b * b).sum(0), (a * b).sum(0)])
    torch.testing.assert_close(whole.totals()[1], expected)


def test_a_colinear_column_is_lerped() -> None:
    first = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    second = torch.tensor([[2.0, 0.0], [4.0, 1.0]])  # column 0 colinear, column 1 orthogonal
    got = slerp.nuslerp_vectors(0.5, first, second, row_wise=True, flatten=False)
    half = 0.5**0.5
    torch.testing.assert_close(got, torch.tensor([[1.5, half], [3.0, half]]))


def _fusion_inputs() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A base and a model whose change is large in a few places (so the fence keeps some)."""
    base, other = _smooth(0), _smooth(1).float()
    g = torch.Generator().manual_seed(9)
    spikes = torch.rand(ROWS, COLS, generator=g) < 0.01
    return base, [torch.where(spikes, other * 20, other).bfloat16()]


@pytest.mark.parametrize("sample", [None, 5000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_arcee_fusion_streamed_equals_whole(sample, dtype, monkeypatch) -> None:
    """All importances (163840 entries, under QUANTILE_SAMPLE) or a seeded sample of 5000."""
    if sample is not None:
        monkeypatch.setattr(arcee_fusion, "QUANTILE_SAMPLE", sample)
    base, models = _fusion_inputs()
    whole = _whole("arcee_fusion", models, base, [{}], {}, dtype, seed=11)
    kept = (whole != base).float().mean().item()
    assert 0.001 < kept < 0.2
    for block_rows in (16, 32):
        got = streamed_bf16("arcee_fusion", models, base, [{}], {}, dtype, block_rows, seed=11)
        assert torch.equal(got, whole), block_rows


def test_arcee_fusion_sample_is_the_whole_paths(monkeypatch) -> None:
    """The streamed fence equals the fence of the whole tensor's sample, and another seed draws
    another sample (so the sample path is the one taken)."""
    monkeypatch.setattr(arcee_fusion, "QUANTILE_SAMPLE", 777)
    base, (other,) = _fusion_inputs()
    scores = arcee_fusion.importance(other.float(), base.float()).reshape(-1)

    def fence(seed: int, block_rows: int) -> torch.Tensor:
        blocks = streamed.row_blocks(ROWS, block_rows)
        read = lambda lo, hi: (other[lo:hi].float(), base[lo:hi].float())  # noqa: E731
        return arcee_fusion.streamed_fence(read, blocks, torch.Generator().manual_seed(seed))

    picks = torch.randint(scores.numel(), (777,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(fence(4, 16), arcee_fusion.outlier_fence(scores[picks]))
    assert torch.equal(fence(4, 8), fence(4, 40))
    assert not torch.equal(fence(4, 16), fence(5, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# (64, 512, 100): rows of 100, blocks of 32 × 512 of them; (3, 65536): blocks of one row, whose
# one-output sum torch would split over threads (summed whole, 4 seeds in 5 differ)
@pytest.mark.parametrize("shape", [(40, 4096), (24, 3, 4096), (64, 512, 100), (3, 65536)])
def test_importance_of_a_row_block_is_the_whole_tensors_rows(dtype, shape) -> None:
    """Bit for bit, whatever the block (aligned to 64K entries) and the thread count."""
    g = torch.Generator().manual_seed(2)
    other, base = (torch.randn(shape, generator=g).to(dtype) for _ in range(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        whole = arcee_fusion.importance(other, base)
        align = blocks.row_alignment(shape)
        for count in (1, 2):
            torch.set_num_threads(count)
            for block_rows in sorted({align, 2 * align, shape[0]}):
                got = [
                    arcee_fusion.importance(other[lo:hi], base[lo:hi])
                    for lo, hi in streamed.row_blocks(shape[0], block_rows)
                ]
                assert torch.equal(torch.cat(got), whole), (count, block_rows)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Two tiny models with an 8192 × 32 embedding and lm_head: 4 blocks of 64K entries each."""
    root = tmp_path_factory.mktemp("wide")
    kwargs = {"layers": 1, "vocab_size": 8192, "tokenizer": False}
    return {
        "a": make_model(root / "a", seed=1, shard_size="300KB", **kwargs),
        "b": make_model(root / "b", seed=2, dtype="bfloat16", **kwargs),
    }


@pytest.mark.parametrize(
    ("method", "params", "sample"),
    [
        ("nuslerp", COLUMNS, None),
        ("arcee_fusion", {}, None),
        ("arcee_fusion", {}, 100),  # every tensor over the sample: the seeded draw
    ],
)
def test_a_tiny_budget_streams_and_writes_the_same_bytes(
    wide, tmp_path, monkeypatch, method, params, sample
) -> None:
    """The merge under a 16K budget (the embeddings in 4 blocks) hashes as one with the default
    budget, which merges every tensor whole."""
    if sample is not None:
        monkeypatch.setattr(arcee_fusion, "QUANTILE_SAMPLE", sample)
    srcs = sources(wide)
    names = srcs["a"].tensor_names()
    two = method == "nuslerp"
    jobs = tuple(
        TensorJob(
            output=name,
            method=method,
            sources=(TensorRef("a", name), TensorRef("b", name))
            if two
            else (TensorRef("b", name),),
            base=None if two else TensorRef("a", name),
            model_params=tuple(WEIGHTS) if two else ({},),
            params=params,
            shape=srcs["a"].shape(name),
            out_dtype="bfloat16",
        )
        for name in names
    )
    plan = MergePlan(jobs=jobs)
    execute(plan, srcs, tmp_path / "whole", shard_size=10**9, seed=3, quiet=True)
    calls: list[int] = []
    original = streamed.stream
    monkeypatch.setattr(
        streamed, "stream", lambda *a, **k: calls.append(k["block_rows"]) or original(*a, **k)
    )
    execute(plan, srcs, tmp_path / "rows", shard_size=10**9, seed=3, quiet=True, memory=16 << 10)
    matrices = [j for j in jobs if len(j.shape) == 2]
    assert len(calls) == len(matrices)  # every matrix streamed
    assert any(rows < j.shape[0] for rows, j in zip(calls, matrices, strict=True))
    assert hashes(tmp_path / "whole") == hashes(tmp_path / "rows")
    merged = read_tensors(tmp_path / "rows")
    base, other = read_tensors(wide["a"]), read_tensors(wide["b"])
    for name in names:
        assert merged[name].dtype == torch.bfloat16
        if not two:  # each entry is the base's or the other model's
            entry_of = (merged[name].float() == base[name].bfloat16().float()) | (
                merged[name].float() == other[name].float()
            )
            assert bool(entry_of.all()), name
    if not two:  # and the fence took some changes: the embeddings are not the base's
        embed = "model.embed_tokens.weight"
        assert not torch.equal(merged[embed], base[embed].bfloat16())


@pytest.mark.parametrize(("method", "params"), [("arcee_fusion", {}), ("nuslerp", COLUMNS)])
def test_the_blocks_and_what_is_held_beside_them_fit_the_share(method, params) -> None:
    """128256 × 8192 bf16 (Llama-3-70B's embeddings) in a 256 MiB share: the 1M sample
    (40 MB) or the per-column sums (8192 × 64 bytes) leave fewer rows to the blocks."""
    from lossless.merge.budget import QUEUED_BLOCKS, block_rows, held_bytes, row_bytes
    from tests.test_executor import _Shapes

    srcs = {"a": _Shapes(), "b": _Shapes()}
    refs = (TensorRef("b", "x"),) if method == "arcee_fusion" else (TensorRef("a", "x"),) * 2
    base = TensorRef("a", "x") if method == "arcee_fusion" else None
    shape = (128256, 8192)
    job = TensorJob("w", method, refs, base, ({},) * len(refs), params, shape, "bfloat16")
    share = 256 << 20
    held = held_bytes(job, shape, share)
    assert held == (40_000_000 if method == "arcee_fusion" else 8192 * 64)
    rows = block_rows(job, srcs, share)
    blocks = (QUEUED_BLOCKS + 2) * rows * row_bytes(job, srcs, shape)
    assert (
        blocks + held
        <= share
        < blocks + held + (QUEUED_BLOCKS + 2) * 8 * row_bytes(job, srcs, shape)
    )
