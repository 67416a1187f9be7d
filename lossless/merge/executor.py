"""Run a MergePlan: compute each output tensor from its sources and write it into shards.

Each tensor is computed by torch (merge/torch_jobs.py: `source.get` → cast to the compute
dtype → the method's pure function → cast to the output dtype) or, where methods/direct.py
covers it (linear; task arithmetic and TIES, a magnitude cut included; bf16 or float32),
without torch: its inputs' bits are mapped into numpy and merged by the fused kernels
(merge/direct_jobs.py), so a merge of such tensors alone never imports torch (1.4 s). Either
way it is written at its place in its shard (tensors/output_shards.py), then dropped. Worker
threads (the math releases the GIL) each compute a tensor and write it themselves, so a
finished tensor never waits for an earlier one and memory holds only the tensors being
computed. Tensors far larger than the typical one (an embedding, the lm_head) start first, so
none is left computing alone at the end; the rest start in file order as workers and memory
come free.

Memory budget (`memory`, `--memory 4G`): the tensors in flight are kept under it; there are as
many workers as cores, or fewer when the budget would give each less than budget.MIN_SHARE. A
tensor whose whole-tensor math would not fit a worker's share is streamed instead, when its
method can be (MethodSpec.streams: every method):
its rows are read, merged and written a block at a time (methods/streamed.py; by the fused
kernels where each entry merges alone: linear, task arithmetic, TIES keeping every entry), with
block rows chosen so the block's working set fits, and the same bytes as the whole-tensor math. A
magnitude cut (TIES, breadcrumbs) decided first may hold most of the share for its tie-order
replay (methods/replay_stream.py). The other methods hold their tensor whole, however large.
A streamed tensor whose bytes may differ from the whole-tensor math (sce's rare case) gets a
note on screen, above the progress bar (none with quiet).

Resume (merge/journal.py): each shard, once complete, is noted in `lossless-journal.jsonl`; a
rerun into the same dir keeps the leading journalled shards that still hash as noted and
recomputes the rest. Since the layout and every tensor are deterministic (randomised methods get
a generator seeded from `seed` and the tensor's name), a killed-then-resumed merge writes the
same bytes as one that ran straight through.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.merge.budget import (
    block_rows,
    default_memory,
    job_bytes,
    job_shape,
    replay_bytes,
    streamed_bytes,
    streams,
    usable_memory,
    worker_count,
)
from lossless.merge.device import CPU, MergeDevice, device_memory
from lossless.merge.direct_jobs import compute_direct, direct_math, write_direct_blocks
from lossless.merge.jobs import MergePlan, TensorJob
from lossless.merge.journal import JOURNAL, append_journal, plan_digest, resume
from lossless.merge.torch_jobs import compute_tensor, tensor_seed, write_streamed
from lossless.methods.table import METHODS
from lossless.tensors.output_shards import OutputShards
from lossless.tensors.source import TensorSource
from lossless.tensors.writer import ShardSpec, layout_shards, write_index
from lossless.threads import LazyTorchThreads

if TYPE_CHECKING:
    import torch

EARLY_FACTOR = 4  # a job over this many times the median job's bytes starts first


def _run_jobs(
    jobs: list[TensorJob],
    sources: Mapping[str, TensorSource],
    shapes: Mapping[str, tuple[int, ...]],
    out: OutputShards,
    done: Callable[[TensorJob, list[str]], None],
    *,
    workers: int,
    seed: int | None,
    memory: int,
    device: MergeDevice = CPU,
    torch_ready: Callable[[], None] = lambda: None,
) -> None:
    """Compute every job on `workers` threads, each writing its own output (`out`), with the
    bytes in flight under `memory` less the baseline; `done(job, notes)` is called on this
    thread as each job ends. Jobs start in file order, the early ones first (_early_jobs), as
    soon as a worker is free and their bytes fit (one always starts when none is running).
    A whole-tensor job that methods/direct.py covers runs without torch (merge/direct_jobs.py);
    `torch_ready()` is called before a job's torch work."""
    usable = usable_memory(memory)
    share = usable // workers

    def plan(job: TensorJob) -> tuple[int, int, int]:
        """(bytes in flight, rows per block: 0 for the whole tensor at once, bytes a decision
        over the whole task vector may hold: a cut's tie-order replay, kept random masks)."""
        shape = shapes[job.output]
        whole = job_bytes(job, sources, shape)
        if not streams(job, shape, whole, share):
            return whole, 0, 0
        rows = block_rows(job, sources, share)
        replay = replay_bytes(job, share, shape)
        return max(streamed_bytes(job, sources, shape, rows, share), replay), rows, replay

    costs = [plan(job) for job in jobs]
    directs = [direct_math(job, sources, shapes[job.output], device) for job in jobs]
    directs = [  # a streamed job's blocks merge without torch when its entries merge alone
        None if merge is None or (rows and not merge.entrywise) else merge
        for merge, (_, rows, _) in zip(directs, costs, strict=True)
    ]
    early = _early_jobs(costs, usable)
    order = early + sorted(set(range(len(jobs))) - set(early))
    stop = threading.Event()

    def run(i: int) -> list[str]:
        job, (_, rows, replay), merge = jobs[i], costs[i], directs[i]
        shape = shapes[job.output]
        if merge is not None and rows:

            def torch_rows(lo: int, hi: int) -> torch.Tensor:
                torch_ready()
                return compute_tensor(job, sources, shape, seed, device, rows=(lo, hi))

            write_direct_blocks(out, job, sources, shape, merge, rows, torch_rows, stop)
            return []
        if merge is not None:
            bits = compute_direct(job, sources, shape, merge)
            if bits is not None:
                out.write_bits(job.output, bits)
                return []
        torch_ready()
        if rows:
            return write_streamed(out, job, sources, shape, seed, rows, replay, stop, device)
        tensor = compute_tensor(job, sources, shape, seed, device)
        out.write(job.output, tensor)
        return []

    running: dict[Future[list[str]], int] = {}
    inflight, next_up = 0, 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="merge") as pool:
        try:
            while next_up < len(order) or running:
                while next_up < len(order) and len(running) < workers:
                    cost = costs[order[next_up]][0]
                    if running and inflight + cost > usable:
                        break
                    running[pool.submit(run, order[next_up])] = order[next_up]
                    inflight += cost
                    next_up += 1
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    inflight -= costs[i][0]
                    done(jobs[i], future.result())
        except BaseException:
            stop.set()
            for future in running:
                future.cancel()
            raise


def _early_jobs(costs: list[tuple[int, int, int]], usable: int) -> list[int]:
    """Whole-tensor jobs far larger than the typical one (an embedding, the lm_head), to start
    before the rest, largest first: at most a quarter of the budget's bytes, and so few that
    any one job started beside them (the writer's next, which always starts) still fits."""
    whole = [i for i, (_, rows, _) in enumerate(costs) if not rows]
    if len(whole) < 4:
        return []
    room = min(usable // 4, usable - max(cost for cost, _, _ in costs))
    typical = sorted(costs[i][0] for i in whole)[len(whole) // 2]
    big = sorted(
        (i for i in whole if costs[i][0] > EARLY_FACTOR * typical), key=lambda i: -costs[i][0]
    )
    chosen, total = [], 0
    for i in big:
        if total + costs[i][0] > room:
            break
        chosen.append(i)
        total += costs[i][0]
    return chosen


__all__ = ["JOURNAL", "execute", "tensor_seed"]


def execute(
    plan: MergePlan,
    sources: Mapping[str, TensorSource],
    out_dir: Path,
    *,
    shard_size: int,
    num_threads: int | None = None,
    seed: int | None = None,
    quiet: bool = False,
    memory: int | None = None,
    device: MergeDevice = CPU,
) -> list[Path]:
    """Write the plan's tensors as safetensors shards (+ index) into `out_dir`, resuming a
    previous interrupted run into the same dir. Returns the files written (shards, index).
    `memory`: the budget for tensors in flight, in bytes (default: `default_memory()`);
    `device`: where the math runs (merge/device.py)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = sorted({r.model for j in plan.jobs for r in (*j.sources, j.base) if r} - set(sources))
    if missing:
        raise LosslessError(f"the merge plan reads models with no source: {', '.join(missing)}")
    unknown = sorted({j.method for j in plan.jobs} - set(METHODS))
    if unknown:
        raise LosslessError(f"unknown merge method(s) in the plan: {', '.join(unknown)}")
    shapes = {job.output: job_shape(job, sources) for job in plan.jobs}
    if len(shapes) != len(plan.jobs):
        counts = Counter(job.output for job in plan.jobs)
        dupes = sorted(name for name, n in counts.items() if n > 1)
        raise LosslessError(f"the merge plan writes these tensors twice: {', '.join(dupes)}")
    shards = layout_shards(
        [(j.output, shapes[j.output], j.out_dtype) for j in plan.jobs], shard_size
    )
    done = resume(out_dir, shards, plan_digest(plan, shards, seed))
    by_name = {job.output: job for job in plan.jobs}
    todo = [by_name[slot.name] for shard in shards[len(done) :] for slot in shard.slots]
    memory = memory or default_memory()
    free = device_memory(device)
    if free is not None:  # the tensors in flight live on the device too: the smaller bound
        memory = min(memory, free * 9 // 10)
    workers = worker_count(max(1, num_threads or os.cpu_count() or 1), memory)
    total_bytes = sum(slot.end - slot.begin for shard in shards for slot in shard.slots)
    done_bytes = sum(slot.end - slot.begin for shard in shards[: len(done)] for slot in shard.slots)

    from rich.markup import escape

    progress = _progress(quiet)
    task = progress.add_task("merging", total=total_bytes, completed=done_bytes) if progress else 0
    tensors_done = len(plan.jobs) - len(todo)

    def job_done(job: TensorJob, notes: list[str]) -> None:
        nonlocal tensors_done
        tensors_done += 1
        if progress:
            for note in notes:
                progress.console.print(f"[dim]{escape(job.output)}: {escape(note)}[/]")
            desc = f"merging {tensors_done}/{len(plan.jobs)} tensors"
            progress.update(task, description=desc)

    def written(nbytes: int) -> None:  # on the worker that wrote them: a streamed tensor's
        progress.update(task, advance=nbytes)  # bar moves block by block

    def shard_done(shard: ShardSpec, sha: str) -> None:
        append_journal(out_dir, {"file": shard.file, "sha256": sha})

    out = OutputShards(out_dir, shards[len(done) :], shard_done, written if progress else None)
    try:
        if progress:
            progress.start()
        with LazyTorchThreads(max(1, (os.cpu_count() or 1) // workers)) as torch_threads:
            _run_jobs(
                todo,
                sources,
                shapes,
                out,
                job_done,
                workers=workers,
                seed=seed,
                memory=memory,
                device=device,
                torch_ready=torch_threads.ensure,
            )
        out.finish()
    except BaseException:
        out.abort()
        raise
    finally:
        if progress:
            progress.stop()
    index = write_index(out_dir, shards)
    return [out_dir / s.file for s in shards] + ([index] if index else [])


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
