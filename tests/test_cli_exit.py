"""The console script's fast exit (cli.entry): the exit code, the piped output and the atexit
handlers all survive it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def entry(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run cli.entry in a child whose stdout is a pipe (block-buffered: lost unless flushed),
    with an atexit handler that writes a file."""
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
        f"sys.argv = ['lossless', *{list(args)!r}]\n"
        "from lossless.cli import entry\n"
        "entry()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return done, marker


def test_a_valid_recipe_exits_0_with_its_output_and_atexit_run(tmp_path: Path) -> None:
    done, marker = entry(tmp_path, "validate", "recipes/quickstart.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok: 1 recipe(s) valid\n"
    assert marker.read_text() == "ran"


def test_an_invalid_recipe_exits_2_with_its_report(tmp_path: Path) -> None:
    recipe = ROOT / "tests" / "invalid" / "apply-no-adapter.yaml"
    done, marker = entry(tmp_path, "validate", str(recipe))
    assert done.returncode == 2
    assert "apply-no-adapter.yaml" in done.stderr + done.stdout
    assert marker.read_text() == "ran"
