"""The executor: right numbers, deterministic bytes, resume after SIGKILL, clean failures."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from lossless.errors import LosslessError
from lossless.merge.budget import job_bytes
from lossless.merge.executor import JOURNAL, execute, tensor_seed
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.methods.table import METHODS, MethodSpec
from lossless.tensors.checkpoint import Checkpoint
from lossless.tensors.writer import sha256_file
from tests.factories import make_model, read_tensors
from tests.merge_helpers import linear_plan, passthrough_plan

ROOT = Path(__file__).resolve().parent.parent


def noisy(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A randomised test method: the first tensor plus seeded noise; optionally slow or failing."""
    time.sleep(float(os.environ.get("LOSSLESS_TEST_SLEEP", "0")))  # slows the kill test
    if params.get("fail"):
        raise RuntimeError("injected failure")
    noise = torch.randn(tensors[0].shape, generator=generator, dtype=tensors[0].dtype)
    return tensors[0] + noise


NOISY = MethodSpec("noisy", "tests.test_executor:noisy", "test only", randomised=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exec")
    return {
        "a": make_model(root / "a", seed=1, shard_size="20KB", tokenizer=False),
        "b": make_model(root / "b", seed=2, dtype="bfloat16", tokenizer=False),
    }


def sources(models: dict[str, Path]) -> dict[str, Checkpoint]:
    return {key: Checkpoint(path, label=key) for key, path in models.items()}


def hashes(out: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.name != JOURNAL}


def noisy_plan(srcs: Mapping[str, Checkpoint], **params: Any) -> MergePlan:
    plan = linear_plan({"a": srcs["a"]}, {"a": 1.0}, method="noisy", params=params)
    # the failing job is the 5th tensor only, so some shards are written before it fails
    if params.get("fail"):
        jobs = [
            job if i == 4 else TensorJob(**{**job.__dict__, "params": {}})
            for i, job in enumerate(plan.jobs)
        ]
        plan = MergePlan(jobs=tuple(jobs), config_source="a")
    return plan


def test_linear_matches_closed_form_bf16_and_fp32(models: dict[str, Path], tmp_path: Path) -> None:
    srcs = sources(models)
    plan = linear_plan(srcs, {"a": 1.0, "b": 3.0}, out_dtype="bfloat16")
    files = execute(plan, srcs, tmp_path, shard_size=3000, quiet=True, num_threads=2)
    assert len(files) > 2 and files[-1].name == "model.safetensors.index.json"
    out, a, b = read_tensors(tmp_path), read_tensors(models["a"]), read_tensors(models["b"])
    assert out.keys() == a.keys()
    for name, tensor in out.items():
        expected = (a[name].float() * 1.0 + b[name].float() * 3.0) / 4.0
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, expected.to(torch.bfloat16)), name


def test_passthrough_is_byte_identical(models: dict[str, Path], tmp_path: Path) -> None:
    srcs = sources(models)
    execute(passthrough_plan(srcs, "b", "bfloat16"), srcs, tmp_path, shard_size=10**9, quiet=True)
    assert [p.name for p in tmp_path.iterdir() if p.name != JOURNAL] == ["model.safetensors"]
    out, b = read_tensors(tmp_path), read_tensors(models["b"])
    assert all(torch.equal(out[k].view(torch.int16), b[k].view(torch.int16)) for k in b)


def test_same_seed_same_bytes_any_threads(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "noisy", NOISY)
    srcs = sources(models)
    plan = noisy_plan(srcs)
    runs = {}
    for name, threads, seed in [("one", 1, 7), ("two", 2, 7), ("other", 2, 8)]:
        execute(
            plan, srcs, tmp_path / name, shard_size=3000, seed=seed, num_threads=threads, quiet=True
        )
        runs[name] = hashes(tmp_path / name)
    assert runs["one"] == runs["two"]
    assert runs["one"].keys() == runs["other"].keys() and runs["one"] != runs["other"]
    # the noise really is the seeded per-tensor generator's
    name = plan.jobs[0].output
    gen = torch.Generator().manual_seed(tensor_seed(7, name))
    expected = read_tensors(models["a"])[name] + torch.randn(plan.jobs[0].shape, generator=gen)
    assert torch.equal(read_tensors(tmp_path / "one")[name], expected)


def test_failure_propagates_and_leaves_no_partial(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "noisy", NOISY)
    srcs = sources(models)
    with pytest.raises(RuntimeError, match="injected failure"):
        execute(noisy_plan(srcs, fail=True), srcs, tmp_path, shard_size=3000, quiet=True)
    assert not list(tmp_path.glob("*.partial"))


def test_shape_mismatch_is_a_clear_error(models: dict[str, Path], tmp_path: Path) -> None:
    srcs = sources(models)
    plan = linear_plan(srcs, {"a": 1.0})
    job = plan.jobs[0]
    bad = TensorJob(**{**job.__dict__, "shape": (*job.shape, 2)})
    with pytest.raises(LosslessError, match="expected"):
        execute(MergePlan(jobs=(bad,)), srcs, tmp_path, shard_size=10**9, quiet=True)


def test_duplicate_outputs_refused(models: dict[str, Path], tmp_path: Path) -> None:
    srcs = sources(models)
    job = linear_plan(srcs, {"a": 1.0}).jobs[0]
    with pytest.raises(LosslessError, match=f"twice: {job.output}"):
        execute(MergePlan(jobs=(job, job)), srcs, tmp_path, shard_size=10**9, quiet=True)


CHILD = """
import sys
from pathlib import Path
from lossless.merge.executor import execute
from lossless.methods.table import METHODS
from lossless.tensors.checkpoint import Checkpoint
from tests.test_executor import NOISY, noisy_plan
METHODS["noisy"] = NOISY
srcs = {"a": Checkpoint(sys.argv[1])}
execute(noisy_plan(srcs), srcs, Path(sys.argv[2]), shard_size=3000,
        seed=3, num_threads=1, quiet=True)
"""


def run_child(model: Path, out: Path, sleep: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env["LOSSLESS_TEST_SLEEP"] = str(sleep)
    args = [sys.executable, "-c", CHILD, str(model), str(out)]
    return subprocess.Popen(args, cwd=ROOT, env=env)


def test_sigkill_mid_shard_then_resume_is_byte_identical(
    models: dict[str, Path], tmp_path: Path
) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_child(models["a"], straight, 0.0).wait() == 0
    child = run_child(models["a"], killed, 0.05)
    journal = killed / JOURNAL
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until two shards are done, then kill mid-third
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    shards_before = sorted(killed.glob("model-*.safetensors"))
    total = len(list(straight.glob("model-*.safetensors")))
    assert 2 <= len(shards_before) < total, "the kill should land mid-run"
    first_mtime = shards_before[0].stat().st_mtime_ns
    assert run_child(models["a"], killed, 0.0).wait() == 0
    assert hashes(killed) == hashes(straight)
    assert shards_before[0].stat().st_mtime_ns == first_mtime  # verified, not rewritten
    entries = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert len(entries) == total


def test_resume_rewrites_a_corrupted_shard(models: dict[str, Path], tmp_path: Path) -> None:
    srcs = sources(models)
    plan = linear_plan(srcs, {"a": 1.0, "b": 1.0})
    execute(plan, srcs, tmp_path, shard_size=3000, quiet=True)
    good = hashes(tmp_path)
    victim = tmp_path / f"model-00002-of-{len(good) - 1:05d}.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    execute(plan, srcs, tmp_path, shard_size=3000, quiet=True)
    assert hashes(tmp_path) == good


def test_ties_reads_inputs_as_stored_and_matches_the_method_on_cast_inputs(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """The task-arithmetic family gets bf16 inputs uncast (casts_inputs) and casts per block;
    the bytes must equal the method run on inputs cast to float32 first, as before."""
    srcs = sources(models)
    params = {"normalize": True, "int8_mask": False, "rescale": False, "lambda": 1.0}
    model_params = ({"weight": 0.7, "density": 0.5},)
    jobs = tuple(
        TensorJob(
            output=name,
            method="ties",
            sources=(TensorRef("b", name),),
            base=TensorRef("a", name),
            model_params=model_params,
            params=params,
            shape=srcs["a"].shape(name),
            out_dtype="bfloat16",
        )
        for name in srcs["a"].tensor_names()
    )
    threads = torch.get_num_threads()
    execute(MergePlan(jobs=jobs), srcs, tmp_path / "out", shard_size=10**9, quiet=True)
    assert torch.get_num_threads() == threads  # the merge's own thread setting is undone
    got = read_tensors(tmp_path / "out")
    a, b = read_tensors(models["a"]), read_tensors(models["b"])
    ties = METHODS["ties"].load()
    for name in a:
        expected = ties([b[name].float()], a[name].float(), list(model_params), params)
        assert torch.equal(got[name], expected.bfloat16()), name


def test_job_bytes_counts_stored_inputs_for_methods_that_cast_themselves(
    models: dict[str, Path],
) -> None:
    srcs = sources(models)
    name = srcs["a"].tensor_names()[0]
    shape = srcs["a"].shape(name)
    count = math.prod(shape)
    job = TensorJob(
        output=name,
        method="ties",
        sources=(TensorRef("b", name),),  # bf16: 2 bytes an entry
        base=TensorRef("a", name),  # float32: 4
        shape=shape,
        out_dtype="bfloat16",
    )
    # inputs as read + output + task vector/magnitudes (4) + sort ids (≤ 4) → no float32 copies
    assert job_bytes(job, srcs, shape) == count * (2 + 4 + 2 + 4 + 4 + 2)
    # a method given float32 copies: inputs as read + output + one copy per input + result
    slerp = TensorJob(**{**job.__dict__, "method": "slerp"})
    assert job_bytes(slerp, srcs, shape) == count * (2 + 4 + 2 + 4 * 3)
    # arcee_fusion: also two softmaxes and the importances (two more float32 entries)
    arcee = TensorJob(**{**job.__dict__, "method": "arcee_fusion"})
    assert job_bytes(arcee, srcs, shape) == count * (2 + 4 + 2 + 4 * 5)
    # ram: its per-model deltas, masks and terms (6 more float32 entries per model)
    ram = TensorJob(**{**job.__dict__, "method": "ram"})
    assert job_bytes(ram, srcs, shape) == count * (2 + 4 + 2 + 4 * (3 + 6))
    # della casts block by block but ranks and draws its whole task vector: 24 bytes more
    della = TensorJob(**{**job.__dict__, "method": "della"})
    assert job_bytes(della, srcs, shape) == count * (2 + 4 + 2 + 4 + 4 + 2 + 24)


def _family_plan(srcs: Mapping[str, Checkpoint], method: str) -> MergePlan:
    params = {"normalize": True, "rescale": method != "ties", "lambda": 1.0}
    model_params = ({"weight": 0.7, "density": 0.5},)
    jobs = tuple(
        TensorJob(
            output=name,
            method=method,
            sources=(TensorRef("b", name),),
            base=TensorRef("a", name),
            model_params=model_params,
            params=params,
            shape=srcs["a"].shape(name),
            out_dtype="bfloat16",
        )
        for name in srcs["a"].tensor_names()
    )
    return MergePlan(jobs=jobs)


@pytest.mark.parametrize("method", ["ties", "dare_ties", "della", "breadcrumbs"])
def test_a_small_memory_budget_streams_rows_and_writes_the_same_bytes(
    models: dict[str, Path], tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget smaller than any tensor, every 2-D tensor is merged a row block at a time
    (and randomised draws replayed from noted generator states): the shards hash the same."""
    from lossless.methods import streamed

    srcs = sources(models)
    plan = _family_plan(srcs, method)
    execute(plan, srcs, tmp_path / "whole", shard_size=10**9, seed=3, quiet=True)
    calls: list[int] = []
    original = streamed.stream

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["block_rows"])
        return original(*args, **kwargs)

    monkeypatch.setattr(streamed, "stream", counted)
    execute(plan, srcs, tmp_path / "rows", shard_size=10**9, seed=3, quiet=True, memory=16 << 10)
    assert len(calls) == sum(len(j.shape) == 2 for j in plan.jobs)  # every matrix streamed
    assert hashes(tmp_path / "whole") == hashes(tmp_path / "rows")


def test_linear_streamed_equals_whole(models: dict[str, Path], tmp_path: Path) -> None:
    srcs = sources(models)
    plan = linear_plan(srcs, {"a": 0.3, "b": 0.7})
    execute(plan, srcs, tmp_path / "whole", shard_size=10**9, quiet=True)
    execute(plan, srcs, tmp_path / "rows", shard_size=10**9, quiet=True, memory=32 << 10)
    assert hashes(tmp_path / "whole") == hashes(tmp_path / "rows")


class _Shapes:
    """A source that only knows shapes and dtypes (enough to plan memory)."""

    def shape(self, name: str) -> tuple[int, ...]:
        return (128256, 8192)

    def dtype(self, name: str) -> str:
        return "BF16"


def test_block_rows_fit_the_budget_and_align_to_64k_blocks() -> None:
    from lossless.merge.budget import QUEUED_BLOCKS, block_rows, parse_memory, row_bytes

    srcs: Any = {"a": _Shapes(), "b": _Shapes(), "c": _Shapes()}
    job = TensorJob(
        output="model.embed_tokens.weight",
        method="ties",
        sources=(TensorRef("b", "x"), TensorRef("c", "x")),
        base=TensorRef("a", "x"),
        model_params=({"weight": 1.0, "density": 0.5},) * 2,
        shape=(128256, 8192),
        out_dtype="bfloat16",
    )
    share = parse_memory("1G")
    rows = block_rows(job, srcs, share)
    assert rows % 8 == 0 and rows >= 8  # 8 rows of 8192 = one 64K block
    assert (QUEUED_BLOCKS + 2) * rows * row_bytes(job, srcs, job.shape) <= share
    assert block_rows(job, srcs, 1) == 8  # never less than one aligned block
    assert parse_memory("4G") == 4 << 30 and parse_memory("512MiB") == 512 << 20
    with pytest.raises(LosslessError):
        parse_memory("lots")


@pytest.mark.parametrize("method", ["della", "dare_linear"])
def test_a_streamed_random_drop_counts_the_masks_it_keeps(method: str) -> None:
    from lossless.merge.budget import (
        QUEUED_BLOCKS,
        block_rows,
        drawn_mask_bytes,
        held_bytes,
        replay_bytes,
        row_bytes,
    )

    srcs: Any = {"a": _Shapes(), "b": _Shapes(), "c": _Shapes()}
    shape = (128256, 8192)
    job = TensorJob(
        "model.embed_tokens.weight",
        method,
        (TensorRef("b", "x"), TensorRef("c", "x")),
        TensorRef("a", "x"),
        ({"weight": 1.0, "density": 0.5},) * 2,
        {},
        shape,
        "bfloat16",
    )
    masks = 2 * 128256 * 8192 // 8  # two models' masks, 8 to a byte: 263 MB
    share = 4 * masks
    assert drawn_mask_bytes(job, shape, share) == masks
    assert held_bytes(job, shape, share) == replay_bytes(job, share, shape) == masks
    rows = block_rows(job, srcs, share)
    assert (QUEUED_BLOCKS + 2) * rows * row_bytes(job, srcs, shape) + masks <= share
    # a quarter of the share a byte short: nothing kept, the merge pass draws them again
    assert drawn_mask_bytes(job, shape, share - 4) == 0
    assert held_bytes(job, shape, share - 4) == replay_bytes(job, share - 4, shape) == 0
    dense = TensorJob(**{**job.__dict__, "model_params": ({"density": 1.0},) * 2})
    ties = TensorJob(**{**job.__dict__, "method": "ties"})
    assert drawn_mask_bytes(dense, shape, share) == drawn_mask_bytes(ties, shape, share) == 0


def test_a_streamed_tensor_never_waits_for_the_one_before_it_to_be_written(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first streamed tensor holds back its blocks until the second has merged all of its
    # own, one row a block: with tensors written in file order the second would wait for the
    # first to be written, and neither would finish. Written by position, both do.
    from lossless.merge import executor
    from lossless.methods import streamed

    srcs = sources(models)
    plan = linear_plan(srcs, {"a": 0.3, "b": 0.7})
    execute(plan, srcs, tmp_path / "plain", shard_size=10**9, quiet=True)
    matrices = [job.output for job in plan.jobs if len(job.shape) == 2]
    first, second = matrices[0], matrices[1]
    second_done = threading.Event()
    stream = streamed.stream

    def held_back(method: str, rows: Any, *args: Any, **kwargs: Any) -> Any:
        name = rows.job.output
        for part in stream(method, rows, *args, **kwargs):
            if name == first and not second_done.wait(30):
                raise AssertionError(f"{second} waited for {first} to be written")
            yield from part.split(1)
        if name == second:
            second_done.set()

    monkeypatch.setattr(streamed, "stream", held_back)
    monkeypatch.setattr(executor, "streams", lambda job, shape, whole, share: len(shape) == 2)
    execute(
        plan, srcs, tmp_path / "rows", shard_size=10**9, quiet=True, memory=3 << 30, num_threads=2
    )
    assert second_done.is_set()
    assert hashes(tmp_path / "rows") == hashes(tmp_path / "plain")


def test_device_cuda_without_cuda_is_a_clear_usage_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from lossless.cli import main

    recipe = tmp_path / "merge.yml"
    recipe.write_text("merge_method: linear\nmodels: []\n")
    assert main(["run", str(recipe), "--device", "cuda"]) == 2


def test_workers_are_fewer_when_the_budget_is_small() -> None:
    from lossless.merge.budget import MIN_SHARE, GiB, worker_count

    assert worker_count(2, 4 * GiB) == 2
    assert worker_count(16, 4 * GiB) == 6  # 3 GiB usable, half a GiB each at least
    assert worker_count(2, GiB) == 1
    assert worker_count(4, MIN_SHARE) == 1  # never none
