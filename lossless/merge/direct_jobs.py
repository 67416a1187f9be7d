"""The merge's tensors computed without torch (methods/direct.py): which jobs qualify, and their
bits, from the checkpoints' mapped pages (Checkpoint.read_bits).

A job qualifies when methods/direct.py covers its method, parameters and dtypes, it runs on
the CPU, and every input is a checkpoint's own tensor of the output's shape (not a LoRA-applied
one, nor rows aligned to another vocabulary). Anything else, and a job whose result is not
finite (whose inputs the torch path then checks, naming the tensor), is left to the executor's
torch path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from lossless.merge.device import MergeDevice
from lossless.merge.jobs import TensorJob
from lossless.methods import direct
from lossless.tensors.checkpoint import Checkpoint
from lossless.tensors.source import TensorSource


def direct_math(
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    device: MergeDevice,
) -> direct.DirectMath | None:
    """How to merge `job` without torch, or None where it does not qualify."""
    refs = [*job.sources, *([job.base] if job.base is not None else [])]
    if not device.is_cpu or not all(isinstance(sources[r.model], Checkpoint) for r in refs):
        return None
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
) -> np.ndarray | None:
    """The output tensor's flat bits, or None: a result not finite, or an input not readable
    as bits (a pickle checkpoint); the torch path then computes the job."""

    def bits(model: str, tensor: str) -> np.ndarray | None:
        source = sources[model]
        assert isinstance(source, Checkpoint)  # direct_math's condition
        return source.read_bits(tensor, direct.STORED)

    tensors = [bits(r.model, r.tensor) for r in job.sources]
    base = None if job.base is None else bits(job.base.model, job.base.tensor)
    if any(t is None for t in tensors) or (job.base is not None and base is None):
        return None
    out = np.empty(math.prod(shape), dtype=direct.COMPUTED[job.out_dtype])
    return out if merge.run(tensors, base, out) else None  # type: ignore[arg-type]
