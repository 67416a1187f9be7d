"""Every benchmark script starts: `--help` imports it and its shared helpers (a refactor of
benchmarks/merge.py once broke train.py's and apply.py's imports, unseen until run by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# plan_vs_mergekit.py imports mergekit, which lives in its own virtualenv, never in this one;
# children.py is a helper module, not a script.
SCRIPTS = sorted(
    p
    for p in BENCHMARKS.glob("*.py")
    if p.name != "plan_vs_mergekit.py" and '__name__ == "__main__"' in p.read_text()
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_script_starts(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
