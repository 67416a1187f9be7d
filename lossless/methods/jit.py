"""numba for the merge kernels, loaded without the BLAS probe its numpy support makes.

Why: numba's numpy support (numba/np/arraymath.py) imports `scipy.linalg.cython_blas` to learn
whether `np.dot` can be compiled. Where scipy is installed that import takes 0.14 s here,
more than a tenth of a 336M-parameter linear merge, and starts OpenBLAS's thread pool, whose
threads spin beside the merge's workers. No lossless kernel calls BLAS, so while numba loads,
the probe finds no BLAS (np.dot in a jitted function would then fail with numba's own error).
A process that has already imported scipy's BLAS keeps it, and numba finds it.
"""

from __future__ import annotations

import sys
from typing import Any

_PROBE = "scipy.linalg.cython_blas"

_hidden = _PROBE not in sys.modules
if _hidden:
    sys.modules[_PROBE] = None  # type: ignore[assignment]  # `import` of it raises ImportError
try:
    import numba
    import numba.np.arraymath  # the module that probes, loaded now
finally:
    if _hidden:
        del sys.modules[_PROBE]

from numba import types  # noqa: E402  # after the probe is answered
from numba.cpython.unsafe.numbers import trailing_zeros as _cttz  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402

trailing_zeros: Any = _cttz  # LLVM's cttz, in compiled code only (untyped for mypy)

__all__ = ["intrinsic", "numba", "overload", "trailing_zeros", "types"]
