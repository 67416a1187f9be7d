"""The merge's tensors computed without torch (methods/direct.py): which jobs qualify, and their
bits, from the checkpoints' mapped pages (Checkpoint.read_bits).

A job qualifies when methods/direct.py covers its method, parameters and dtypes, it runs on
the CPU, and every input is a safetensors checkpoint's own tensor of the output's shape (not a
LoRA-applied one, nor rows aligned to another vocabulary). A job too large for a worker's share
of the memory qualifies when its merge is entrywise (no magnitude cut): it is merged a block of
rows at a time, each block from its rows' own mapped pages. Anything else, and a job whose
result is not finite (whose inputs the torch path then checks, naming the tensor), is left to
the executor's torch path.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from lossless.merge.device import MergeDevice
from lossless.merge.jobs import TensorJob
from lossless.methods import direct
from lossless.tensors.checkpoint import Checkpoint
from lossless.tensors.output_shards import OutputShards
from lossless.tensors.source import TensorSource

if TYPE_CHECKING:
    import torch


def direct_math(
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    device: MergeDevice,
) -> direct.DirectMath | None:
    """How to merge `job` without torch, or None where it does not qualify."""
    refs = [*job.sources, *([job.base] if job.base is not None else [])]
    readers = [sources[r.model] for r in refs]
    if not device.is_cpu or not all(isinstance(s, Checkpoint) and s.maps_bits for s in readers):
        return None  # a pickle's bits cannot be mapped: each block would fall to torch
    if any(sources[r.model].shape(r.tensor) != shape for r in refs):
        return None  # the torch path says what differs
    if (job.method == "linear") != (job.base is None):
        return None  # linear takes its base among the inputs; the chain needs one
    base = None if job.base is None else sources[job.base.model].dtype(job.base.tensor)
    return direct.plan(
        job.method,
        job.model_params,
        job.params,
        stored=[sources[r.model].dtype(r.tensor) for r in job.sources],
        base_stored=base,
        compute_dtype=job.compute_dtype,
        out_dtype=job.out_dtype,
    )


def compute_direct(
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    merge: direct.DirectMath,
    rows: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """The output tensor's flat bits (those of its rows [lo, hi) with `rows`, for an
    `entrywise` merge), or None: a result not finite, or an input not readable as bits (a
    dtype the kernels do not take); the torch path then computes them."""

    def bits(model: str, tensor: str) -> np.ndarray | None:
        source = sources[model]
        assert isinstance(source, Checkpoint)  # direct_math's condition
        return source.read_bits(tensor, direct.STORED, rows)

    tensors = [bits(r.model, r.tensor) for r in job.sources]
    base = None if job.base is None else bits(job.base.model, job.base.tensor)
    if any(t is None for t in tensors) or (job.base is not None and base is None):
        return None
    count = math.prod(shape) if rows is None else (rows[1] - rows[0]) * math.prod(shape[1:])
    out = np.empty(count, dtype=direct.COMPUTED[job.out_dtype])
    return out if merge.run(tensors, base, out) else None  # type: ignore[arg-type]


def write_direct_blocks(
    out: OutputShards,
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    merge: direct.DirectMath,
    rows: int,
    torch_rows: Callable[[int, int], torch.Tensor],
    stop: threading.Event,
) -> None:
    """A streamed job whose merge is `entrywise`, `rows` rows a block, each block's bits
    merged from its rows' mapped pages and written at its place; a block whose result is not
    finite is computed by `torch_rows(lo, hi)` instead (which checks its inputs and names a
    tensor holding a NaN). The maps go with each block, so the memory held is the block's."""
    for lo in range(0, shape[0], rows):
        if stop.is_set():  # another job failed: the merge is over
            return
        hi = min(lo + rows, shape[0])
        bits = compute_direct(job, sources, shape, merge, (lo, hi))
        if bits is None:
            out.write(job.output, torch_rows(lo, hi), first_row=lo)
        else:
            out.write_bits(job.output, bits, first_row=lo)
