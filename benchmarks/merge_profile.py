"""Where a merge's time goes: reading, converting, the math, the magnitude cut, writing.

    python benchmarks/merge_profile.py CONFIG.yml [--memory 4G]

Runs the merge of a mergekit config (as `lossless run` would plan it) in this process, with
the executor's usual workers, and sums the wall time each worker thread spends in:
  - read: mapping each tensor's bytes (tensors/checkpoint.py), or `preadv` of the few that
    cannot be mapped; the maps' page faults count where the pages are first touched,
  - decide: the magnitude cut of each task vector (radix select and tie-order replay included;
    its own reads and arithmetic count here, not above; in the merges without torch, the task
    vector made for it too),
  - math: the elementwise merge of each tensor or block (the casts of its inputs to the
    compute dtype included; linear, or the task-arithmetic chain after the cut; with or
    without torch: methods/direct.py, whose first call loads numba and its kernels),
  - write: the workers' positional writes of tensors and blocks (tensors/output_shards.py),
  - hash: the shard hasher's read-back of the written bytes and their sha256 (its own
    thread, waits not counted),
  - check: the NaN/Inf check of each tensor read,
and `execute`, the executor's own wall time (the rest is planning, input checks, the output's
other files).
Times are summed over threads, so they can add up to more than the wall time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOTALS: collections.Counter[str] = collections.Counter()
_local = threading.local()


@contextlib.contextmanager
def phase(name: str, carve: bool = False) -> Iterator[None]:
    """Time the block under `name`, unless an outer phase of this thread already counts it;
    with `carve`, inside an outer phase, count it under `name` and take it off the outer's."""
    outer = getattr(_local, "inside", None)
    if outer is not None and not carve:
        yield
        return
    _local.inside = name
    start = time.perf_counter()
    try:
        yield
    finally:
        spent = time.perf_counter() - start
        TOTALS[name] += spent
        if outer is not None:
            TOTALS[outer] -= spent
        _local.inside = outer


def timed(name: str, fn: Callable[..., Any], carve: bool = False) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with phase(name, carve):
            return fn(*args, **kwargs)

    return wrapper


def instrument() -> None:
    from lossless.methods import (
        direct,
        linear,
        sparsify,
        streamed,
        streamed_cuts,
        task_arithmetic,
    )
    from lossless.tensors import checkpoint, output_shards

    checkpoint._pread_into = timed("read", checkpoint._pread_into)
    checkpoint._map_entry = timed("read", checkpoint._map_entry)  # the merges without torch
    checkpoint.check_finite = timed("check", checkpoint.check_finite)
    from lossless.merge import executor

    run = executor.execute

    def execute(*args: Any, **kwargs: Any) -> Any:  # wall time, around the nested phases
        start = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            TOTALS["execute"] += time.perf_counter() - start

    executor.execute = execute
    for module, names in (
        (sparsify, ("top_magnitude", "middle_magnitude")),
        (streamed_cuts, ("top", "middle")),
    ):
        for name in names:  # looked up on the module at each call
            setattr(module, name, timed("decide", getattr(module, name)))
    # the elementwise math, casts of the inputs to the compute dtype included
    task_arithmetic.combine = streamed.combine = timed("math", task_arithmetic.combine)
    linear.linear = streamed.linear = timed("math", linear.linear)
    direct.DirectMath.run = timed("math", direct.DirectMath.run)  # the merges without torch
    direct.DirectMath.cuts = timed("decide", direct.DirectMath.cuts, carve=True)  # their cuts
    # the workers' positional writes, and the shard hasher's read-back and sha256 (its thread)
    shards = output_shards.OutputShards
    shards.write = timed("write", shards.write)
    shards.write_bits = timed("write", shards.write_bits)
    hash_loop, next_range = shards._hash_loop, shards._next_range

    def waiting(self: Any) -> Any:  # the hasher's idle time, taken off its loop's
        start = time.perf_counter()
        try:
            return next_range(self)
        finally:
            TOTALS["hash"] -= time.perf_counter() - start

    def hashing(self: Any) -> None:
        start = time.perf_counter()
        try:
            hash_loop(self)
        finally:
            TOTALS["hash"] += time.perf_counter() - start

    shards._next_range, shards._hash_loop = waiting, hashing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--memory", default="")
    args = parser.parse_args()
    instrument()
    import torch

    from lossless import cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        argv = ["-q", "--no-copy-tokenizer", "--work-dir", str(Path(tmp) / "work")]
        if args.memory:
            argv += ["--memory", args.memory]
        start = time.perf_counter()
        code = cli.main(["run", *argv, str(args.config), str(out)])
        wall = time.perf_counter() - start
        if code:
            sys.exit(f"the merge failed (exit {code})")
    print(f"wall {wall:.1f} s, {torch.get_num_threads()} torch threads")
    for name in ("execute", "read", "check", "decide", "math", "write", "hash"):
        print(f"  {name:<7} {TOTALS[name]:7.1f} s")


if __name__ == "__main__":
    main()
