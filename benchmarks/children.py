"""Run a benchmark case in a fresh interpreter and read back its figures and its own peak RSS.

Shared by benchmarks/train.py and benchmarks/apply.py. The parent never imports torch: a child's
peak RSS (ru_maxrss) starts from its parent's at fork, so a heavy parent would inflate it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(code: str, args: list[str]) -> tuple[dict[str, float], float]:
    """Run `code` in a fresh interpreter; return its last JSON line and its peak RSS in GiB
    (`os.wait4` gives that child's rusage alone). Both pipes are drained by threads, so a child
    that writes a lot to stderr cannot block on a full pipe before it exits."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", code, *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()))
        for k, f in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for reader in readers:
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"child failed:\n{out['stderr']}")
    return json.loads(out["stdout"].strip().splitlines()[-1]), usage.ru_maxrss / 2**20
