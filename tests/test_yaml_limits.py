"""Hostile YAML files (tests/hostile/) end in seconds and under 200 MB, with a located error.

Each file runs in a child process with address-space and CPU-time limits, so a regression cannot
take the test machine to 13 GB (or hang) the way the first billion-laughs file did; the child
measures its own time and peak RSS around `validate` and `run`. The time bound only tells a
refusal from a runaway (a bomb expands for minutes): how fast a refusal is belongs to
benchmarks/yaml_bombs.py, not to a test on a shared machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lossless.recipe.yaml_io import parse_documents
from lossless.recipe.yaml_limits import MAX_DEPTH, MAX_FILE_BYTES

RUNAWAY_SECONDS = 10  # a refusal takes milliseconds; an expanding bomb, minutes
HOSTILE = Path(__file__).resolve().parent / "hostile"
CASES = sorted(HOSTILE.glob("*.yaml"))

_CHILD = """
import io, json, resource, sys, time, contextlib
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a runaway dies, not the machine
resource.setrlimit(resource.RLIMIT_CPU, (30, 30))
from lossless.cli import main
report = {}
for command in (["validate", sys.argv[1]], ["run", sys.argv[1], sys.argv[2]]):
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        rc = main(command)
    report[command[0]] = {"rc": rc, "seconds": time.perf_counter() - start, "text": err.getvalue()}
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent across exec
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
report["rss_mb"] = int(status) / 1024
print(json.dumps(report))
"""


def measure(recipe: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(recipe), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def fifty_mb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "fifty-mb.yaml"
    path.write_text("models:\n  - model: " + "x" * 50_000_000 + "\nmerge_method: linear\n")
    return path


@pytest.mark.parametrize("case", [*CASES, "fifty-mb"], ids=lambda p: getattr(p, "stem", p))
def test_hostile_file_is_refused_fast_and_small(
    case: Path | str, fifty_mb: Path, tmp_path: Path
) -> None:
    recipe = fifty_mb if case == "fifty-mb" else case
    report = measure(recipe, tmp_path / "out")
    for command in ("validate", "run"):
        got = report[command]
        assert got["rc"] == 2, got["text"]
        assert "Traceback" not in got["text"] and "internal error" not in got["text"]
        assert f"{recipe.name}:" in got["text"]  # located: file (and line where there is one)
        assert got["seconds"] < RUNAWAY_SECONDS, (command, got["seconds"])
    assert report["rss_mb"] < 200
    assert not (tmp_path / "out").exists()


def test_each_limit_names_its_line() -> None:
    _, found = parse_documents("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "f.yaml")
    assert (found[0].code, found[0].line) == ("yaml-limit", 1)
    assert "nested more than 64 levels" in found[0].message
    _, found = parse_documents("a: 1\nb: " + "7" * 31, "f.yaml")
    assert (found[0].line, found[0].col, found[0].message) == (2, 4, "an integer of 31 digits")
    _, found = parse_documents("a: &x [1, 2]\nb: [*x, *x]\n", "f.yaml")
    assert found == []  # ordinary aliases are fine


def test_file_size_is_checked_before_reading(tmp_path: Path) -> None:
    from lossless.recipe.yaml_limits import read_yaml_text

    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:  # sparse: 10 GB on paper, nothing on disk
        handle.truncate(10_000_000_000)
    text, problem = read_yaml_text(big)
    assert text is None and problem is not None
    assert f"at most {MAX_FILE_BYTES:,}" in problem.message
