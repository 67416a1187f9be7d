"""How much memory a merge may use, and what that means for one tensor job.

The budget (`--memory 4G`; default half the available memory, between 2 and 16 GiB) is shared
by the executor's workers. A job whose whole-tensor math fits a worker's share runs whole; one that
does not, and whose method can stream (`MethodSpec.streams`), runs a block of rows at a time,
with blocks sized here so the ones in flight fit the share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from lossless.errors import LosslessError
from lossless.merge.jobs import TensorJob, TensorRef
from lossless.methods.table import METHODS
from lossless.tensors.safetensors_header import DTYPE_BYTES, TORCH_TO_SAFETENSORS
from lossless.tensors.source import TensorSource

GiB = 1 << 30
# What the process holds besides tensors in flight: the interpreter, torch, numba and their
# libraries' pages, the writer's buffers. Measured on a 70B-layer TIES merge at --memory 4G:
# 0.56 GiB of its own memory and up to 0.6 GiB of mapped library pages (half a GiB, as this
# was, let it peak at 4.02 GiB).
BASELINE = GiB
MIN_SHARE = GiB // 2  # a worker's share below this helps no one: fewer workers instead
QUEUED_BLOCKS = 1  # a streamed tensor's next block, read ahead on a device (merge/rows.py)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": GiB, "T": 1 << 40}
# Stacked (models × entries) compute-dtype copies a method holds at once beyond the one the
# generic estimate counts: sce's task vectors, their selection, sign agreement, kept weights
# and products (sce.combine); arcee_fusion's softmaxes and importances beside the inputs
# (measured: 25 bytes an entry for bf16 inputs, 2 more than this counts; 24 for float32);
# ram's per-model deltas, masks and terms (measured: 69 bytes an entry, 2 bf16 models).
_STACKED_COPIES = {"sce": 4, "arcee_fusion": 3, "ram": 7, "ramplus_tl": 7}
# Bytes an entry beyond the generic estimate for the methods that cast block by block: della's
# magnitude ranks (two int64 argsorts), keep probabilities and draws (measured: ≥ 32 bytes an
# entry against 18 counted).
_EXTRA_ENTRY_BYTES = {"della": 24, "della_linear": 24}


def parse_memory(text: str) -> int:
    """ "4G", "512M", "4GiB", "4GB" (all binary) or a byte count → bytes."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise LosslessError(
            f"--memory {text!r} is not a size", hint="write it like 4G, 512M or 6GiB"
        ) from None
    if number <= 0:
        raise LosslessError(f"--memory {text!r} must be positive", hint="for example --memory 4G")
    return int(number * _UNITS[unit])


def default_memory() -> int:
    """$LOSSLESS_MEMORY if set, else half the memory the machine has available now (a merge
    shares it with the page cache it reads through and with other work), between 2 and
    16 GiB."""
    if os.environ.get("LOSSLESS_MEMORY"):
        return parse_memory(os.environ["LOSSLESS_MEMORY"])
    return min(16 * GiB, max(2 * GiB, available_memory() // 2))


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (free memory plus the page cache that can be dropped);
    elsewhere half the RAM."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * GiB


def usable_memory(memory: int) -> int:
    """The part of the budget for tensors in flight (less the process's own baseline)."""
    return memory - BASELINE if memory > 2 * BASELINE else memory // 2


def worker_count(cores: int, memory: int) -> int:
    """As many workers as cores, but no more than the budget gives MIN_SHARE each."""
    return max(1, min(cores, usable_memory(memory) // MIN_SHARE))


def job_shape(job: TensorJob, sources: Mapping[str, TensorSource]) -> tuple[int, ...]:
    """The planned shape, or the first source's when a hand-built plan left it empty."""
    if job.shape:
        return tuple(job.shape)
    ref = job.sources[0]
    return tuple(sources[ref.model].shape(ref.tensor))


def job_bytes(job: TensorJob, sources: Mapping[str, TensorSource], shape: tuple[int, ...]) -> int:
    """Bytes a job holds while in flight: its inputs as read, its output, and the method's copies
    (every input cast to the compute dtype, or for a method that casts block by block, one task
    vector, its magnitudes and their sort ids), and the float32 work of adapted inputs."""
    return math.prod(shape) * _entry_bytes(job, sources) + working_bytes(job, sources)


def _entry_bytes(job: TensorJob, sources: Mapping[str, TensorSource]) -> int:
    """What one output entry costs: the inputs' entries as read, the output's, the copies'."""
    refs = _refs(job)
    read = sum(DTYPE_BYTES.get(sources[r.model].dtype(r.tensor), 4) for r in refs)
    compute = DTYPE_BYTES[TORCH_TO_SAFETENSORS[job.compute_dtype]]
    out = DTYPE_BYTES[TORCH_TO_SAFETENSORS[job.out_dtype]]
    if METHODS[job.method].casts_inputs:
        return read + out + 2 * max(compute, 4) + 2 + _EXTRA_ENTRY_BYTES.get(job.method, 0)
    stacked = (_STACKED_COPIES.get(job.method, 1) - 1) * len(job.sources)
    return read + out + compute * (len(refs) + 1 + stacked)


def _refs(job: TensorJob) -> list[TensorRef]:
    return [*job.sources, *([job.base] if job.base is not None else [])]


def working_bytes(job: TensorJob, sources: Mapping[str, TensorSource]) -> int:
    """Bytes the inputs' sources hold while computing what they return, whatever the rows
    asked for: an adapted tensor's float32 chunks (tensors/adapted.py), 0 for a checkpoint."""
    total = 0
    for ref in _refs(job):
        working = getattr(sources[ref.model], "working_bytes", None)
        total += working(ref.tensor) if working is not None else 0
    return total


def row_bytes(job: TensorJob, sources: Mapping[str, TensorSource], shape: tuple[int, ...]) -> int:
    """Bytes one output row costs in a streamed job: its inputs' rows as read, the output row,
    and the float copies of the 64K-block math (a task vector row, its magnitudes, a mask)."""
    row = math.prod(shape[1:])
    return max(row * _entry_bytes(job, sources), row)


def streamed_bytes(
    job: TensorJob,
    sources: Mapping[str, TensorSource],
    shape: tuple[int, ...],
    rows: int,
    share: int,
) -> int:
    """Bytes a job streamed `rows` rows a block holds: the blocks in flight (the one computed,
    the one before it, still being written, and the next one read ahead on a device), its
    sources' working bytes and what the method holds beside its blocks (`held_bytes`)."""
    blocks = (QUEUED_BLOCKS + 2) * rows * row_bytes(job, sources, shape)
    return blocks + working_bytes(job, sources) + held_bytes(job, shape, share)


def held_bytes(job: TensorJob, shape: tuple[int, ...], share: int) -> int:
    """Bytes a streamed job holds besides its blocks: arcee_fusion's quantile sample (values,
    positions sorted with their order, and the values' sort), nuslerp's per-column sums and
    sines (`nuslerp_row_wise`), a random drop's kept masks (`drawn_mask_bytes`); 0 for the
    others (a few scalars)."""
    masks = drawn_mask_bytes(job, shape, share)
    if masks:
        return masks
    if job.method == "arcee_fusion":
        from lossless.methods.arcee_fusion import QUANTILE_SAMPLE

        return min(math.prod(shape), QUANTILE_SAMPLE) * 40
    if job.method == "nuslerp" and not job.params.get("nuslerp_flatten", True):
        return math.prod(shape[1:]) * 64 if job.params.get("nuslerp_row_wise") else 0
    return 0


def block_rows(job: TensorJob, sources: Mapping[str, TensorSource], share: int) -> int:
    """Rows per block for a streamed job so that the blocks in flight (`streamed_bytes`) and
    what the job holds besides fit `share` bytes; at least one 64K-aligned block
    (blocks.row_alignment), at most the whole tensor."""
    from lossless.methods.blocks import row_alignment

    shape = job_shape(job, sources)
    align = row_alignment(shape)
    free = max(0, share - working_bytes(job, sources) - held_bytes(job, shape, share))
    fit = free // ((QUEUED_BLOCKS + 2) * row_bytes(job, sources, shape))
    return min(max(align, fit // align * align), max(shape[0], 1))


def streams(job: TensorJob, shape: tuple[int, ...], whole: int, share: int) -> bool:
    """Whether a job is streamed: its method can be, and its whole-tensor math exceeds `share`."""
    return METHODS[job.method].streams and len(shape) >= 2 and shape[0] > 1 and whole > share


def replay_bytes(job: TensorJob, share: int, shape: tuple[int, ...]) -> int:
    """What a streamed job's decision over whole task vectors may hold: for a magnitude cut
    (TIES top-k, breadcrumbs) or sce's variance cut, most of the share for the tie-order
    replay, since the cut is decided before any block is merged; for a random drop, its kept
    masks (`drawn_mask_bytes`); 0 for a method without one."""
    if job.method == "sce":
        return share * 9 // 10 if float(job.params.get("select_topk", 1.0)) < 1 else 0
    sparsifier = _sparsifier(job)
    if sparsifier in ("random", "rank_random"):
        return drawn_mask_bytes(job, shape, share)
    if sparsifier not in ("top", "outliers"):
        return 0
    return share * 9 // 10


def drawn_mask_bytes(job: TensorJob, shape: tuple[int, ...], share: int) -> int:
    """A streamed random drop's masks (dare, della), packed 8 to a byte and kept from the first
    pass to the merge, when every model's fit a quarter of the share (else 0: drawn again)."""
    if _sparsifier(job) not in ("random", "rank_random"):
        return 0
    from lossless.methods.streamed import packed_mask_bytes  # imports torch

    total = len(job.model_params) * packed_mask_bytes(math.prod(shape))
    return total if total <= share // 4 else 0


def _sparsifier(job: TensorJob) -> str | None:
    """The task-arithmetic family's sparsifier when some model is sparsified, else None."""
    if all(float(p.get("density", 1.0)) >= 1 for p in job.model_params):
        return None  # known before the method's module (and torch) is loaded
    family = getattr(METHODS[job.method].load(), "family", None)
    if family is None or family.sparsifier is None:
        return None
    return str(family.sparsifier)
