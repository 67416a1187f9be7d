"""The merge device: which one `--device` / `--cuda` / `--read-to-gpu` choose, the refusal when
CUDA is asked for and absent, and the plumbing a device merge runs through, exercised on the CPU
(reads moved and read ahead, host-made decisions applied to device blocks). No GPU here: the
CUDA figures come from benchmarks/merge_gpu.py on a machine that has one."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from lossless.errors import UsageError
from lossless.merge import device as merge_device
from lossless.merge.device import CPU, MergeDevice, resolve_device
from lossless.merge.jobs import TensorJob, TensorRef
from lossless.merge.rows import JobRows
from lossless.methods import sparsify


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge_device, "cuda_available", lambda: False)


@pytest.fixture
def has_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge_device, "cuda_available", lambda: True)


def test_default_and_cpu_are_the_cpu(has_cuda: None) -> None:
    assert resolve_device(None) == CPU  # a GPU is used only when asked for
    assert resolve_device("cpu") == CPU


def test_auto_takes_cuda_only_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge_device, "cuda_available", lambda: True)
    assert resolve_device("auto") == MergeDevice("cuda")
    monkeypatch.setattr(merge_device, "cuda_available", lambda: False)
    assert resolve_device("auto") == CPU


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"device": "cuda"}, "--device cuda"),
        ({"device": None, "cuda": True}, "--cuda"),
        ({"device": None, "read_to_gpu": True}, "--read-to-gpu"),
        ({"device": "auto", "cuda": True, "read_to_gpu": True}, "--cuda --read-to-gpu"),
    ],
)
def test_cuda_asked_for_and_absent_is_refused_naming_the_flag(
    no_cuda: None, kwargs: dict, named: str
) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_device(kwargs.pop("device"), **kwargs)
    assert caught.value.message.startswith(f"{named} was asked for, but torch sees no CUDA device")
    assert "--device auto" in (caught.value.hint or "")


def test_mergekit_flags_choose_cuda(has_cuda: None) -> None:
    assert resolve_device(None, cuda=True) == MergeDevice("cuda")
    assert resolve_device(None, read_to_gpu=True) == MergeDevice("cuda")
    with pytest.raises(UsageError, match="--cuda ask\\(s\\) for CUDA, but --device cpu"):
        resolve_device("cpu", cuda=True)


def test_cli_cuda_flag_without_cuda_exits_2_before_reading_the_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from lossless.cli import main

    missing = tmp_path / "no-such-recipe.yml"  # never read: the flag is judged first
    assert main(["run", str(missing), "--cuda"]) == 2
    err = capsys.readouterr().err
    assert "--cuda was asked for, but torch sees no CUDA device" in err
    assert "no-such-recipe" not in err


class _Rows:
    """A source of one 2-D tensor that counts its row reads and the threads making them."""

    label = "m"

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.reads: list[tuple[int, int, str]] = []

    def get_rows(self, name: str, lo: int, hi: int) -> torch.Tensor:
        self.reads.append((lo, hi, threading.current_thread().name))
        return self.tensor[lo:hi].clone()

    def get(self, name: str) -> torch.Tensor:
        raise AssertionError("read whole")


def test_device_rows_are_read_one_block_ahead_on_a_thread_of_their_own() -> None:
    tensor = torch.arange(40 * 8, dtype=torch.float32).reshape(40, 8)
    source = _Rows(tensor)
    job = TensorJob(output="w", method="linear", sources=(TensorRef("m", "w"),), shape=(40, 8))
    rows = JobRows(job, {"m": source}, (40, 8), device=torch.device("cpu"))
    try:
        got = [rows.model(0, lo, lo + 16) for lo in (0, 16)] + [rows.model(0, 32, 40)]
        assert torch.equal(torch.cat(got), tensor)
        # out of order (a replay's random access): read directly, still the right rows
        assert torch.equal(rows.model(0, 8, 12), tensor[8:12])
    finally:
        rows.close()
    ahead = [(lo, hi) for lo, hi, thread in source.reads if thread.startswith("rows-ahead")]
    assert (16, 32) in ahead and (32, 40) in ahead  # blocks 2 and 3 came from the read-ahead
    assert source.reads[0][:2] == (0, 16) and not source.reads[0][2].startswith("rows-ahead")


def test_cpu_rows_have_no_read_ahead() -> None:
    source = _Rows(torch.zeros(40, 8))
    job = TensorJob(output="w", method="linear", sources=(TensorRef("m", "w"),), shape=(40, 8))
    rows = JobRows(job, {"m": source}, (40, 8))
    rows.model(0, 0, 16)
    rows.close()
    assert [r[:2] for r in source.reads] == [(0, 16)]


def test_a_mask_decided_on_the_host_is_applied_to_a_block_on_another_device() -> None:
    """The meta device stands in for a GPU: a host mask must be moved, or torch refuses."""
    host_mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    kept = sparsify.Kept(lambda block, start: host_mask[start : start + block.numel()])
    block = torch.empty(4, device="meta")
    assert kept.apply(block).device.type == "meta"
    with pytest.raises(RuntimeError):  # what the move prevents
        torch.empty(4, device="meta") * host_mask


def test_random_draws_are_made_on_the_host_by_the_cpu_generator() -> None:
    delta = torch.randn(64, 32)
    for make in (
        lambda g: sparsify.random_entries(delta, 0.5, g),
        lambda g: sparsify.random_by_rank(delta, 0.5, 0.1, g),
    ):
        a = make(torch.Generator().manual_seed(3)).apply_whole(delta)
        b = make(torch.Generator().manual_seed(3)).apply_whole(delta)
        assert torch.equal(a, b) and not torch.equal(a, delta)
    assert sparsify.random_work_dtype(delta.half()) == torch.float32  # bernoulli's CPU dtype
