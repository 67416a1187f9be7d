"""One run at a time per work dir and output: the second says who holds the lock, or waits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lossless.cli import main
from lossless.engine.runlock import lock_path_for, run_locks
from tests.factories import make_model

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lossless.engine.runlock import run_locks
    with run_locks([Path(sys.argv[1])], say=lambda text: None):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lock")
    make_model(root / "a", seed=1)
    make_model(root / "b", seed=2)
    path = root / "project" / "r.yaml"
    path.parent.mkdir()
    path.write_text(
        f"models:\n  - model: {root / 'a'}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {root / 'b'}\n    parameters: {{weight: 0.5}}\nmerge_method: linear\n"
    )
    return path


def hold(lock: Path, seconds: float) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


def test_a_held_lock_fails_the_second_run_naming_the_holder(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    holder = hold(lock_path_for(out, work_dir=False), 30)
    try:
        assert main(["run", str(recipe), str(out), "--quiet"]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert f"another lossless run holds {out.parent / '.out.lock'}: pid {holder.pid}" in err
        assert "started" in err and "--wait" in err and "internal error" not in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_wait_queues_behind_the_holder(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = recipe.parent / ".lossless" / "r"
    holder = hold(lock_path_for(work, work_dir=True), 1.5)
    start = time.monotonic()
    assert main(["run", str(recipe), str(tmp_path / "out"), "--wait"]) == 0
    assert time.monotonic() - start >= 1.0 and holder.wait() == 0
    assert f"waiting for the run that holds {work / '.run.lock'}" in capsys.readouterr().err
    assert not (work / ".run.lock").exists()  # released


def test_a_dead_runs_lock_is_taken_over_with_a_note(tmp_path: Path) -> None:
    lock = tmp_path / ".run.lock"
    holder = hold(lock, 30)
    holder.kill()  # SIGKILL: the kernel drops the flock, the file with its pid stays
    holder.wait()
    assert json.loads(lock.read_text())["pid"] == holder.pid
    notes: list[str] = []
    with run_locks([lock], say=notes.append):
        assert json.loads(lock.read_text())["pid"] != holder.pid
    assert len(notes) == 1 and f"left by pid {holder.pid}" in notes[0]
    assert "no longer running" in notes[0]


def test_two_concurrent_runs_never_hit_an_internal_error(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "lossless", "run", str(recipe), str(out), "--quiet"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(r.wait(), r.stderr.read() if r.stderr else "") for r in runs]
    assert sorted(rc for rc, _ in results) in ([0, 0], [0, 1]), results
    for rc, err in results:
        assert "internal error" not in err and "Traceback" not in err
        if rc == 1:
            assert "another lossless run holds" in err
    assert (out / "lossless-manifest.json").is_file()
