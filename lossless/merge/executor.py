"""Run a MergePlan: compute each output tensor from its sources and stream it into shards.

Data flow, per tensor: `source.get` (a safetensors memory map) → cast to the job's compute dtype →
the method's pure function → shape check → cast to the output dtype → the shard writer, then
dropped. Worker threads compute upcoming tensors (torch releases the GIL in the math) while the
calling thread writes finished ones in file order, so memory holds only the tensors in flight.
Tensors far larger than the typical one (an embedding, the lm_head) start first, so none is left
computing alone at the end; the rest start in file order, up to LOOKAHEAD per worker ahead of
the writer, so no worker waits while the writer hashes.

Memory budget (`memory`, `--memory 4G`): the tensors in flight are kept under it; there are as
many workers as cores, or fewer when the budget would give each less than budget.MIN_SHARE. A
tensor whose whole-tensor math would not fit a worker's share is streamed instead, when its
method can be (MethodSpec.streams: every method):
its rows are read, merged and written a block at a time (methods/streamed.py), with block
rows chosen so the block's working set fits, and the same bytes as the whole-tensor math. A
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

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.merge.block_queue import BlockQueue
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
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.merge.journal import JOURNAL, append_journal, plan_digest, resume
from lossless.methods.table import METHODS
from lossless.tensors.source import TensorSource
from lossless.tensors.writer import ShardWriter, layout_shards, write_index
from lossless.threads import torch_threads

if TYPE_CHECKING:
    import torch

LOOKAHEAD = 4  # whole-tensor jobs started ahead of the writer, per worker
EARLY_FACTOR = 4  # a job over this many times the median job's bytes starts first


def tensor_seed(seed: int | None, name: str) -> int:
    """A per-tensor seed from the run seed and the output name, independent of job order.
    No seed means seed 0: a lossless merge is reproducible by default."""
    digest = hashlib.sha256(f"{seed or 0}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch wants a non-negative int64


def _compute(
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    fn: Callable[..., Any],
    shape: tuple[int, ...],
    seed: int | None,
    device: MergeDevice = CPU,
) -> torch.Tensor:
    import torch

    spec = METHODS[job.method]
    compute, out_dtype = getattr(torch, job.compute_dtype), getattr(torch, job.out_dtype)
    target = device.torch()

    def read(ref: TensorRef) -> torch.Tensor:
        """The input on the device, moved in its stored dtype (bf16: 2 bytes an entry), cast
        there, unless the method casts block by block itself."""
        tensor = sources[ref.model].get(ref.tensor)
        if not device.is_cpu:
            tensor = tensor.to(target)
        return tensor if spec.casts_inputs else tensor.to(compute)

    tensors = [read(r) for r in job.sources]
    base = None if job.base is None else read(job.base)
    kwargs: dict[str, Any] = {}
    if spec.randomised:
        kwargs["generator"] = torch.Generator().manual_seed(tensor_seed(seed, job.output))
    if spec.casts_inputs:
        kwargs.update(dtype=compute, out_dtype=out_dtype)
    out = fn(tensors, base, list(job.model_params), dict(job.params), **kwargs)
    if tuple(out.shape) != shape:
        raise LosslessError(
            f"merge method {job.method!r} gave {job.output!r} shape {tuple(out.shape)}, "
            f"expected {shape}",
            hint="the inputs' shapes differ; check the models are the same architecture",
        )
    return out.to(out_dtype).cpu()


def _produce_stream(
    blocks: BlockQueue,
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    seed: int | None,
    rows: int,
    replay: int,
    device: MergeDevice = CPU,
) -> None:
    import torch

    from lossless.merge.rows import JobRows
    from lossless.methods.streamed import stream

    generator = None
    if METHODS[job.method].randomised:
        generator = torch.Generator().manual_seed(tensor_seed(seed, job.output))
    job_rows = JobRows(job, sources, shape, device=None if device.is_cpu else device.torch())
    parts = stream(
        job.method,
        job_rows,
        list(job.model_params),
        dict(job.params),
        block_rows=rows,
        dtype=getattr(torch, job.compute_dtype),
        out_dtype=getattr(torch, job.out_dtype),
        generator=generator,
        replay_memory=replay,
        note=blocks.notes.append,
    )
    try:
        blocks.produce(part.cpu() for part in parts)
    finally:
        job_rows.close()


def _stream(
    jobs: list[TensorJob],
    sources: Mapping[str, TensorSource],
    shapes: Mapping[str, tuple[int, ...]],
    workers: int,
    seed: int | None,
    memory: int,
    device: MergeDevice = CPU,
) -> Generator[tuple[TensorJob, torch.Tensor | BlockQueue], None, None]:
    """Yield computed tensors (or a streamed tensor's blocks) in job order while up to
    `workers` threads compute ahead, the bytes in flight under `memory` less the baseline."""
    fns = {name: METHODS[name].load() for name in {job.method for job in jobs}}
    usable = usable_memory(memory)
    share = usable // workers

    def plan(job: TensorJob) -> tuple[int, int, int]:
        """(bytes in flight, rows per block: 0 for the whole tensor at once, bytes the
        tie-order replay of a magnitude cut may hold)."""
        shape = shapes[job.output]
        whole = job_bytes(job, sources, shape)
        if not streams(job, shape, whole, share):
            return whole, 0, 0
        rows = block_rows(job, sources, share)
        replay = replay_bytes(job, share, shape)
        return max(streamed_bytes(job, sources, shape, rows, share), replay), rows, replay

    costs = [plan(job) for job in jobs]
    # bytes counted in flight from a job's start until it is written
    started: dict[int, tuple[int, Future[Any], BlockQueue | None]] = {}
    inflight, next_job = 0, 0
    early = _early_jobs(costs, usable)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="merge") as pool:

        def start(i: int) -> None:
            nonlocal inflight
            job, (cost, rows, replay) = jobs[i], costs[i]
            shape = shapes[job.output]
            blocks = BlockQueue() if rows else None
            future: Future[Any]
            if blocks is not None:
                future = pool.submit(
                    _produce_stream, blocks, job, sources, shape, seed, rows, replay, device
                )
            else:
                fn = fns[job.method]
                future = pool.submit(_compute, job, sources, fn, shape, seed, device)
            started[i] = (cost, future, blocks)
            inflight += cost

        try:
            for i in early:  # the largest tensors first, so none is left running alone at the end
                start(i)
            for head in range(len(jobs)):
                next_job = max(next_job, head)
                while next_job < len(jobs) and next_job - head < LOOKAHEAD * workers:
                    if next_job in started:
                        next_job += 1
                        continue
                    cost, rows, _ = costs[next_job]
                    # the head always starts; a streamed job's worker waits on the writer after
                    # a few blocks, so it starts only as near the head as the old window allowed
                    far = rows and next_job > head + workers
                    if next_job > head and (inflight + cost > usable or far):
                        break
                    start(next_job)
                    next_job += 1
                size, future, blocks = started.pop(head)
                job = jobs[head]
                if blocks is not None:
                    try:  # the writer drains it; the worker ends with the last block
                        yield job, blocks
                    finally:
                        blocks.stop()  # a no-op once drained; frees the worker if the write failed
                    future.result()
                else:
                    tensor = future.result()
                    yield job, tensor
                    del tensor
                inflight -= size
                del future, blocks
        finally:
            for _, future, blocks in started.values():
                future.cancel()
                if blocks is not None:
                    blocks.stop()


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
    with torch_threads(max(1, (os.cpu_count() or 1) // workers)):
        stream = _stream(todo, sources, shapes, workers, seed, memory, device)
        try:
            if progress:
                progress.start()
            for shard in shards[len(done) :]:
                writer = ShardWriter(out_dir, shard)
                try:
                    for slot in shard.slots:
                        job, tensor = next(stream)
                        if isinstance(tensor, BlockQueue):
                            writer.write_parts(job.output, tensor)
                            for note in tensor.notes if progress else ():
                                progress.console.print(
                                    f"[dim]{escape(job.output)}: {escape(note)}[/]"
                                )
                        else:
                            writer.write(job.output, tensor)
                        tensors_done += 1
                        if progress:
                            desc = f"merging {tensors_done}/{len(plan.jobs)} tensors"
                            progress.update(task, advance=slot.end - slot.begin, description=desc)
                        del tensor
                    sha = writer.close()
                except BaseException:
                    writer.abort()
                    raise
                append_journal(out_dir, {"file": shard.file, "sha256": sha})
        finally:
            stream.close()
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
