"""The package's own promises: the CLI answers, and the method table is well formed."""

import subprocess
import sys

from lossless.methods.table import METHODS


def test_cli_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lossless", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("run", "validate", "plan", "chat"):
        assert command in result.stdout


def test_method_table_names_match_keys() -> None:
    assert all(name == spec.name for name, spec in METHODS.items())
    assert {"linear", "slerp", "ties", "dare_ties", "passthrough"} <= set(METHODS)
