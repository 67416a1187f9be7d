"""numba loads for the kernels without importing scipy's BLAS (methods/jit.py), and a process
that has already imported it keeps it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("numba")
pytest.importorskip("scipy")

CHILD = """
import json, sys
{before}
from lossless.methods import fused_kernels, sort_replay_kernel
import numba.np.arraymath
print(json.dumps({{"scipy_linalg": "scipy.linalg" in sys.modules,
                  "blas": numba.np.arraymath._HAVE_BLAS,
                  "probe": repr(sys.modules.get("scipy.linalg.cython_blas", "absent"))[:9]}}))
"""


def child(before: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(before=before)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_the_kernels_load_without_scipys_blas_and_leave_no_trace() -> None:
    got = child("")
    # scipy.linalg never imported, numba told there is no BLAS, and the marker removed: a
    # later `import scipy.linalg.cython_blas` works as it would have
    assert got == {"scipy_linalg": False, "blas": False, "probe": "'absent'"}


def test_a_process_that_imported_scipys_blas_keeps_it() -> None:
    got = child("import scipy.linalg.cython_blas")
    assert got["scipy_linalg"] is True and got["blas"] is True
    assert str(got["probe"]).startswith("<module")
