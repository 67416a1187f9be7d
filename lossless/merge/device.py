"""Where a merge's math runs: `--device cpu|cuda|auto`, and mergekit's `--cuda` / `--read-to-gpu`.

The executor reads every tensor on the host (safetensors memory maps, row blocks by `preadv`),
moves it to the device in its stored dtype (half the bytes of float32 for bf16), casts and
merges it there, and brings the result back for the shard writer. What stays on the CPU on any
device, so a GPU merge picks the same entries as a CPU one (and as mergekit on CPU):
- which entries tied at a TIES / breadcrumbs magnitude cut are kept: torch orders ties
  differently on CUDA, so when ties straddle the cut the CPU's sort order is replayed on a host
  copy of the magnitudes (methods/sparsify.py); a cut without straddling ties is decided on the
  device;
- random draws (dare, della, arcee_fusion's sample): made by the CPU generator seeded from
  `--random-seed` and the tensor's name, then moved, so a seed means the same masks anywhere.
What may differ from the CPU path in the last bit: sums whose order the device chooses (the
norms and dot products of slerp / nuslerp / model_stock / karcher / multislerp, the L1 rescale
factor, a sum over models), and a fused multiply-add where the CPU rounds twice. No GPU has been lent to this project yet:
`benchmarks/merge_gpu.py` compares every method's output on CUDA with the CPU path's (and times
`mergekit-yaml --cuda`) on the first machine that has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lossless.errors import UsageError

if TYPE_CHECKING:
    import torch

CHOICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class MergeDevice:
    """The device merge math runs on; `kind` is "cpu" or "cuda"."""

    kind: str = "cpu"

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def torch(self) -> torch.device:
        import torch

        return torch.device(self.kind)

    def describe(self) -> str:
        if self.is_cpu:
            return "cpu"
        import torch

        return f"cuda ({torch.cuda.get_device_name(0)})"


CPU = MergeDevice("cpu")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(
    device: str | None, *, cuda: bool = False, read_to_gpu: bool = False
) -> MergeDevice:
    """The device from `--device` and mergekit's flags. `--cuda` and `--read-to-gpu` ask for
    CUDA as `--device cuda` does (lossless always moves inputs to the device as they are read,
    which is what `--read-to-gpu` asks of mergekit). CUDA asked for and absent, or asked for
    beside `--device cpu`, is a usage error, said before any work."""
    flags = [flag for flag, on in (("--cuda", cuda), ("--read-to-gpu", read_to_gpu)) if on]
    if device not in (None, *CHOICES):
        raise UsageError(
            f"--device {device!r} is not a device lossless merges on",
            hint="use --device cpu, cuda or auto",
        )
    if flags and device == "cpu":
        raise UsageError(
            f"{' and '.join(flags)} ask(s) for CUDA, but --device cpu was given",
            hint="drop one of them",
        )
    wanted = "cuda" if flags else (device or "cpu")
    if wanted == "auto":
        return MergeDevice("cuda") if cuda_available() else CPU
    if wanted == "cuda" and not cuda_available():
        import torch

        asked = " ".join(flags) if flags else "--device cuda"
        raise UsageError(
            f"{asked} was asked for, but torch sees no CUDA device "
            f"(torch {torch.__version__}, cuda build {torch.version.cuda or 'none'})",
            hint="drop the flag (or use --device auto) to merge on the CPU",
        )
    return MergeDevice(wanted)


def device_memory(device: MergeDevice) -> int | None:
    """Bytes free on the device now (None for the CPU, whose budget is `--memory`)."""
    if device.is_cpu:
        return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)
