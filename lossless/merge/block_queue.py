"""A streamed tensor's output blocks, handed from the worker computing them to the writer.

The queue is small (budget.QUEUED_BLOCKS), so a fast worker waits for the writer instead of
holding the whole tensor; an error in the worker reaches the writer's thread, and `stop()`
frees a worker whose writer gave up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lossless.merge.budget import QUEUED_BLOCKS

if TYPE_CHECKING:
    import torch


class BlockQueue:
    """A streamed job's output blocks, computed on a worker thread, read in order by the writer
    through a small queue (so at most QUEUED_BLOCKS wait). `stop()` ends the worker early."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_BLOCKS)
        self._stopped = threading.Event()
        self.notes: list[str] = []  # what the method said of this tensor (streamed.stream's note)

    def produce(self, blocks: Iterator[torch.Tensor]) -> None:
        try:
            for block in blocks:
                if not self._put(block):
                    return
            self._put(self._END)
        except BaseException as error:  # handed to the writer's thread
            self._put(error)

    def _put(self, item: Any) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self._stopped.set()
