"""torch's intra-op thread count, set for one piece of work and then restored.

Both merges (one job per core in worker threads) and the training of tiny models run faster
with fewer torch threads than cores: more oversubscribe the cores, and on a busy 2-core machine
threads that wait on each other stall (a TIES tensor took 6× longer with each worker's ops split
over 2 threads; the quickstart's base trained several times slower on 2 threads than on 1).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads; the previous count comes back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LazyTorchThreads:
    """`torch_threads` for work that may not need torch at all (a merge whose tensors all run
    without it: methods/direct.py): nothing is imported until `ensure()`, which the first
    piece of torch work calls; the count set then is restored on exit. If torch is loaded
    already, the count is set on entry, as torch_threads does."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._before: int | None = None
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Set torch's thread count now, once, before this thread's torch work."""
        with self._lock:
            if self._before is None:
                import torch

                self._before = torch.get_num_threads()
                torch.set_num_threads(self._count)

    def __enter__(self) -> LazyTorchThreads:
        if "torch" in sys.modules:
            self.ensure()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is not None:
            import torch

            torch.set_num_threads(self._before)
