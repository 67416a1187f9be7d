"""sce over row blocks (methods/streamed_sce.py): the whole-tensor path's bits, torch.topk's tie
choice replayed where it can be, the lowest-index ties (and a note) where it cannot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lossless.merge.executor import execute
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.methods import radix, sce, sort_replay, streamed
from lossless.tensors.checkpoint import Checkpoint
from tests.factories import make_model
from tests.methods.test_streamed import _levels, _smooth, streamed_bf16
from tests.test_executor import hashes

MODELS = 3


def _inputs(make: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [make(seed) for seed in range(1, MODELS + 1)], make(9)


def _both(
    models: list[torch.Tensor],
    base: torch.Tensor,
    params: dict[str, Any],
    dtype: torch.dtype,
    block_rows: int,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(whole-tensor sce as the executor runs it, the streamed blocks joined, the notes)."""
    model_params = [{}] * len(models)
    whole = sce.sce([m.to(dtype) for m in models], base.to(dtype), model_params, params)
    notes: list[str] = []
    got = streamed_bf16(
        "sce", models, base, model_params, params, dtype, block_rows, note=notes.append
    )
    return whole.to(torch.bfloat16), got, notes


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int16), b.view(torch.int16))


PARAMS = [
    {"select_topk": 1.0},
    {"select_topk": 0.5},
    {"select_topk": 0.1},
    {"select_topk": 0.1, "int8_mask": True},
]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: "-".join(map(str, p.values())))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_streamed_sce_equals_whole_bit_for_bit(params, dtype) -> None:
    models, base = _inputs(_smooth)
    for block_rows in (16, 32):  # one 64K block, two
        whole, got, notes = _both(models, base, params, dtype, block_rows)
        assert _same_bits(got, whole) and not notes
        if params["select_topk"] < 1:  # the selection is real: some entries keep the base
            assert (got == base).float().mean() > 0.3


def _variance_keys(models: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    deltas = torch.stack([m.float() - base.float() for m in models])
    return torch.var(deltas, dim=0, unbiased=False).abs().reshape(-1)


def _cut(keys: torch.Tensor, fraction: float) -> tuple[int, radix.Rank]:
    keep = sce.keep_count(int(torch.count_nonzero(keys)), fraction)
    return keep, radix.kth_magnitude(lambda: [keys], keep)


@pytest.mark.parametrize("fraction", [0.5, 0.1])
def test_ties_at_the_cut_follow_torch_topk_where_it_runs_nth_element(fraction) -> None:
    """Few distinct variances: the cut splits thousands of tied entries, and the streamed path
    keeps the ones torch.topk keeps (its introselect replayed), not the lowest-index ones."""
    models, base = _inputs(lambda s: _levels(s, 7))
    keys = _variance_keys(models, base)
    keep, rank = _cut(keys, fraction)
    assert rank.beyond < keep < rank.beyond + rank.equal  # ties straddle the cut
    assert sort_replay.topk_replays(keys.numel(), keep)
    whole, got, notes = _both(models, base, {"select_topk": fraction}, torch.float32, 16)
    assert _same_bits(got, whole) and not notes
    chosen = torch.topk(keys, keep).indices
    tied = torch.nonzero(keys == rank.value).view(-1)
    lowest = tied[: keep - rank.beyond]
    assert not torch.equal(chosen[keys[chosen] == rank.value].sort().values, lowest)


def test_ties_where_torch_topk_uses_its_heap_keep_the_lowest_index_ones() -> None:
    """select_topk 0.01 keeps under 1/64 of the entries: topk's partial_sort heap decides its
    ties, which streaming cannot replay; the streamed path keeps exactly k entries, every one
    above the cut and the lowest-index tied ones, and says so. (9 levels: the cut is not the
    largest variance, so topk's heap evicts tied entries in its own order.)"""
    models, base = _inputs(lambda s: _levels(s, 9))
    keys = _variance_keys(models, base)
    keep, rank = _cut(keys, 0.01)
    assert rank.beyond < keep < rank.beyond + rank.equal
    assert not sort_replay.topk_replays(keys.numel(), keep)
    for block_rows in (16, 32):
        whole, got, notes = _both(models, base, {"select_topk": 0.01}, torch.float32, block_rows)
        # an entry is kept where the merge moved it off the base (no kept delta here is 0)
        kept = (got.float() != base.float()).reshape(-1)
        tied = torch.nonzero(keys == rank.value).view(-1)
        expected = keys > rank.value
        expected[tied[: keep - rank.beyond]] = True
        assert int(kept.sum()) == keep
        assert torch.equal(kept, expected)
        assert len(notes) == 1 and "lowest index" in notes[0]
        assert f"{keep - rank.beyond} of the {rank.equal} entries tied" in notes[0]
    topk_kept = (whole.float() != base.float()).reshape(-1)
    assert int(topk_kept.sum()) == keep and not torch.equal(topk_kept, expected)


def test_energy_sums_do_not_depend_on_the_block_split() -> None:
    deltas = torch.randn(2, 200_000, generator=torch.Generator().manual_seed(0))
    whole = sce.Energy(2)
    whole.add(deltas)
    parts = sce.Energy(2)
    for lo in range(0, 200_000, 1 << 16):
        parts.add(deltas[:, lo : lo + (1 << 16)])
    assert whole.sums == parts.sums
    expected = deltas.double().square().sum(dim=1)
    torch.testing.assert_close(torch.tensor(whole.sums, dtype=torch.float64), expected)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checkpoint]:
    root = tmp_path_factory.mktemp("sce")
    return {
        name: Checkpoint(make_model(root / name, seed=seed, tokenizer=False))
        for seed, name in enumerate(("base", "b", "c"), start=1)
    }


def _sce_plan(srcs: dict[str, Checkpoint], select_topk: float) -> MergePlan:
    jobs = tuple(
        TensorJob(
            output=name,
            method="sce",
            sources=(TensorRef("b", name), TensorRef("c", name)),
            base=TensorRef("base", name),
            model_params=({}, {}),
            params={"select_topk": select_topk},
            shape=srcs["base"].shape(name),
            out_dtype="bfloat16",
        )
        for name in srcs["base"].tensor_names()
    )
    return MergePlan(jobs=jobs)


@pytest.mark.parametrize("select_topk", [1.0, 0.3])
def test_a_small_budget_streams_sce_with_the_same_bytes(
    checkpoints: dict[str, Checkpoint],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    select_topk: float,
) -> None:
    plan = _sce_plan(checkpoints, select_topk)
    execute(plan, checkpoints, tmp_path / "whole", shard_size=10**9, quiet=True)
    calls: list[str] = []
    original = streamed.stream

    def counted(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return original(method, *args, **kwargs)

    monkeypatch.setattr(streamed, "stream", counted)
    small = tmp_path / "rows"
    execute(plan, checkpoints, small, shard_size=10**9, quiet=True, memory=16 << 10)
    assert calls == ["sce"] * sum(len(j.shape) == 2 for j in plan.jobs)  # every matrix
    assert hashes(tmp_path / "whole") == hashes(small)


def test_a_streamed_tensors_note_is_printed_with_its_name(
    checkpoints: dict[str, Checkpoint],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = streamed.stream

    def noting(method: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["note"]("ties kept by lowest index")
        return original(method, *args, **kwargs)

    monkeypatch.setattr(streamed, "stream", noting)
    plan = _sce_plan(checkpoints, 0.5)
    plan = MergePlan(jobs=tuple(j for j in plan.jobs if len(j.shape) == 2)[:1])
    execute(plan, checkpoints, tmp_path / "noted", shard_size=10**9, memory=16 << 10)
    assert f"{plan.jobs[0].output}: ties kept by lowest index" in capsys.readouterr().out
    execute(plan, checkpoints, tmp_path / "quiet", shard_size=10**9, quiet=True, memory=16 << 10)
    assert "lowest index" not in capsys.readouterr().out


def test_budget_counts_sces_stacked_copies_and_its_replay() -> None:
    """sce holds its task vectors, their selection, sign agreement, kept weights and products
    (models × entries each) at once; a variance cut may hold most of the share to replay."""
    from lossless.merge.budget import job_bytes, replay_bytes

    class Shapes:
        def shape(self, name: str) -> tuple[int, ...]:
            return (64, 1024)

        def dtype(self, name: str) -> str:
            return "BF16"

    srcs: Any = {name: Shapes() for name in ("base", "b", "c")}
    job = TensorJob(
        output="w",
        method="sce",
        sources=(TensorRef("b", "w"), TensorRef("c", "w")),
        base=TensorRef("base", "w"),
        model_params=({}, {}),
        params={"select_topk": 0.5},
        shape=(64, 1024),
        out_dtype="bfloat16",
    )
    # 3 inputs as read (bf16) + bf16 output + float32: 3 casts, 1 result, 3 more stacked × 2
    assert job_bytes(job, srcs, job.shape) == 64 * 1024 * (3 * 2 + 2 + 4 * (3 + 1 + 3 * 2))
    assert replay_bytes(job, 1000, job.shape) == 900
    whole_selection = TensorJob(**{**job.__dict__, "params": {"select_topk": 1.0}})
    assert replay_bytes(whole_selection, 1000, job.shape) == 0
