"""torch's intra-op thread count, set for one piece of work and then restored.

Both merges (one job per core in worker threads) and the training of tiny models run faster
with fewer torch threads than cores: more oversubscribe the cores, and on a busy 2-core machine
threads that wait on each other stall (a TIES tensor took 6× longer with each worker's ops split
over 2 threads; the quickstart's base trained several times slower on 2 threads than on 1).
"""

from __future__ import annotations

import contextlib
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
