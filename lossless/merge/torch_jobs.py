"""The merge's tensors computed by torch: whole, a streamed job's row blocks (methods/streamed.py),
or one block of an entrywise merge whose kernel result was not finite (merge/direct_jobs.py).

Data flow: `source.get` (or `get_rows`: a safetensors memory map) → cast to the job's compute
dtype (on the merge's device) → the method's pure function → shape check → cast to the output
dtype, back on the CPU for the writer.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lossless.errors import LosslessError
from lossless.merge.device import CPU, MergeDevice
from lossless.merge.jobs import TensorJob, TensorRef
from lossless.methods.table import METHODS
from lossless.tensors.output_shards import OutputShards
from lossless.tensors.source import TensorSource

if TYPE_CHECKING:
    import torch


def tensor_seed(seed: int | None, name: str) -> int:
    """A per-tensor seed from the run seed and the output name, independent of job order.
    No seed means seed 0: a lossless merge is reproducible by default."""
    digest = hashlib.sha256(f"{seed or 0}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch wants a non-negative int64


def compute_tensor(
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    seed: int | None,
    device: MergeDevice = CPU,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The job's output tensor by torch (its rows [lo, hi) alone with `rows`, for a method
    whose entries merge alone: methods/direct.py's `entrywise`)."""
    import torch

    spec = METHODS[job.method]
    fn = spec.load()
    compute, out_dtype = getattr(torch, job.compute_dtype), getattr(torch, job.out_dtype)
    target = device.torch()

    def read(ref: TensorRef) -> torch.Tensor:
        """The input on the device, moved in its stored dtype (bf16: 2 bytes an entry), cast
        there, unless the method casts block by block itself."""
        source = sources[ref.model]
        if rows is None:
            tensor = source.get(ref.tensor)
        else:  # a checkpoint reads those rows' bytes alone (merge/rows.py)
            reader = getattr(source, "get_rows", None)
            part = reader(ref.tensor, *rows) if reader is not None else None
            tensor = source.get(ref.tensor)[rows[0] : rows[1]] if part is None else part
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
    if rows is not None:
        shape = (rows[1] - rows[0], *shape[1:])
    if tuple(out.shape) != shape:
        raise LosslessError(
            f"merge method {job.method!r} gave {job.output!r} shape {tuple(out.shape)}, "
            f"expected {shape}",
            hint="the inputs' shapes differ; check the models are the same architecture",
        )
    return out.to(out_dtype).cpu()


def write_streamed(
    out: OutputShards,
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    seed: int | None,
    rows: int,
    replay: int,
    stop: threading.Event,
    device: MergeDevice = CPU,
) -> list[str]:
    """Merge a streamed job block by block, each block written at its place as it comes;
    returns what the method noted of the tensor (streamed.stream's `note`)."""
    import torch

    from lossless.merge.rows import JobRows
    from lossless.methods.streamed import stream

    generator = None
    if METHODS[job.method].randomised:
        generator = torch.Generator().manual_seed(tensor_seed(seed, job.output))
    notes: list[str] = []
    job_rows = JobRows(job, sources, shape, device=None if device.is_cpu else device.torch())
    try:
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
            note=notes.append,
        )
        first = 0
        for part in parts:
            if stop.is_set():  # another job failed: the merge is over
                break
            out.write(job.output, part.cpu(), first_row=first)
            first += part.shape[0]
        else:
            if first != shape[0]:
                raise LosslessError(
                    f"output tensor {job.output!r}: {first} rows merged, expected {shape}"
                )
    finally:
        job_rows.close()
    return notes
