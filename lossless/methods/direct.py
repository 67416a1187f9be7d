"""Merge math on a tensor's bits in numpy arrays, with no torch: linear, and the task-arithmetic
chain where every entry is kept (task_arithmetic; ties and its kin at density 1) or after the
TIES magnitude cut (ties at any density, without rescale).

Why: `import torch` takes 1.4 s here, a third of the wall time of a 336M-parameter linear
merge, and these merges need none of it: the fused kernels (fused_kernels.py) take numpy arrays.
So the executor computes the tensors this module covers straight from the checkpoints' bytes,
and imports torch only for a tensor it does not cover (merge/executor.py).

The result is the torch path's, bit for bit (tests/methods/test_direct.py runs each method's
torch function beside `DirectMath.run`): the parameters are read and rounded as the torch
functions read them (methods/linear.py, methods/task_arithmetic.py), and the kernels are the
ones fused.py calls there; the TIES cut is the compiled replay of torch's sort order on the
task vector's bits that the torch path runs (top_cut.replay_bits_first), trusted as it is
there (methods/replay_trust.py remembers the self-check per torch installation). Not covered,
so left to torch: other methods, another sparsifier at a density under 1 (random drops,
breadcrumbs, a rescaled cut), dtypes other than bf16 and float32, inputs of mixed dtypes, more than 4
float32 task vectors or more than 4 normalized linear weights (torch sums those in an order
of its own), and any tensor whose result is not finite or whose cut the replay cannot make
(`run` says False).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossless.methods import blocks
from lossless.methods.table import METHODS

# the integer type whose width holds each dtype's bits (bf16 has no numpy dtype), as the
# kernels are compiled per integer type: safetensors' names, then torch's
STORED = {"BF16": np.int16, "F32": np.int32}
COMPUTED = {"bfloat16": np.int16, "float32": np.int32}
_FAMILY = "lossless.methods.task_arithmetic:"
# task_arithmetic's members that elect signs (their functions' `family.elect_sign`; a test
# checks the two agree), and the one member that never sparsifies
SIGN_ELECTING = frozenset({"ties", "dare_ties", "breadcrumbs_ties", "della"})
_NEVER_SPARSIFIES = "task_arithmetic"
_CUT_BY_MAGNITUDE = "ties"  # the member whose sparsifier is the plain top-k magnitude cut
# the kernels' limits, fused.py's too: a kernel is compiled per count of inputs; torch adds up
# to 4 float32 rows (and linear's weights) in order, one by one, more in an order of its own
MAX_MODELS = 16
MAX_SUMMED = 4
_KEEP_ALL = np.float32(-1.0)  # a cut every magnitude exceeds
_NO_TIES = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class DirectMath:
    """One tensor's merge, ready to run on its inputs' bits."""

    linear: bool  # linear; else the task-arithmetic chain (which needs the base)
    weights: tuple[np.float32, ...]
    divisor: np.float32  # linear's (1: not normalized)
    elect_sign: bool
    normalize: bool
    scale: np.float32  # the chain's lambda
    like: np.ndarray  # an empty array of the compute dtype's integer type
    densities: tuple[float, ...] = ()  # the TIES cut's per model (1: every entry kept)

    @property
    def entrywise(self) -> bool:
        """Each output entry depends on the inputs' same entry alone (no magnitude cut over the
        tensor), so a block of rows merges alone (merge/direct_jobs.py)."""
        return self.linear or not self.densities

    def run(self, tensors: Sequence[np.ndarray], base: np.ndarray | None, out: np.ndarray) -> bool:
        """The merged bits into `out` (flat, the output dtype's integer type); False, with
        nothing promised in `out`, when an entry of the result is not finite."""
        from lossless.methods import fused_kernels

        models = tuple(tensors)
        if self.linear:
            return bool(fused_kernels.linear(models, self.weights, self.divisor, self.like, out))
        cut = self.cuts(models, base)
        if cut is None:
            return False
        cuts, tied = cut
        combine, fix_ties = fused_kernels.combine_kernel(
            self.elect_sign, self.normalize, self.scale != 1
        )
        args = (models, base, self.weights, cuts, self.scale, self.like, out)
        if not combine(*args):
            return False
        return not any(t.size for t in tied) or bool(fix_ties(*args, tied, 0))

    def cuts(
        self, models: tuple[np.ndarray, ...], base: np.ndarray | None
    ) -> tuple[tuple[np.float32, ...], tuple[np.ndarray, ...]] | None:
        """Each model's TIES cut, as the torch path makes it (sparsify.top_magnitude): the
        magnitude its kept entries exceed (-1: all kept) and the entries tied at it that it
        keeps; None where the replay cannot say (the torch path then decides)."""
        count = 0 if base is None else base.size
        if all(d >= 1 for d in self.densities) or count == 0:
            return tuple(_KEEP_ALL for _ in models), tuple(_NO_TIES for _ in models)
        from lossless.methods import fused_kernels, replay_trust, sort_replay, sort_replay_kernel

        if not replay_trust.replay_trusted():
            return None
        delta = np.empty(count, dtype=self.like.dtype)  # every model's in turn, ranked in place
        ids: np.ndarray = np.empty(count, dtype=sort_replay.index_type(count))
        cuts, tied = [], []
        for model, density in zip(models, self.densities, strict=True):
            if density >= 1:
                cuts.append(_KEEP_ALL)
                tied.append(_NO_TIES)
                continue
            keep = max(1, int(density * count))  # top_magnitude's count
            if keep >= count:
                return None  # torch keeps all through a mask, not a cut
            fused_kernels.task_vector(model, base, self.like, delta)
            found = sort_replay_kernel.cut_of_magnitudes(delta, delta, keep, ids)
            if found is None or not math.isfinite(found[0]):
                return None  # a NaN, the depth limit, or an inf cut: torch's to decide
            cuts.append(np.float32(found[0]))
            tied.append(found[1])
        return tuple(cuts), tuple(tied)


def plan(
    method: str,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    stored: Sequence[str],
    base_stored: str | None,
    compute_dtype: str,
    out_dtype: str,
) -> DirectMath | None:
    """The tensor's merge without torch, or None where this module does not cover it.
    `stored`: the inputs' safetensors dtypes (the base's apart), as read."""
    spec = METHODS.get(method)
    if spec is None:
        return None
    covered = (
        blocks.KERNELS
        and 0 < len(stored) <= MAX_MODELS
        and len(set(stored)) == 1
        and stored[0] in STORED
        and compute_dtype in COMPUTED
        and out_dtype in COMPUTED
    )
    if not covered:
        return None
    like = np.empty(0, dtype=COMPUTED[compute_dtype])
    if method == "linear":
        return _linear(model_params, params, like)
    if spec.impl.startswith(_FAMILY) and base_stored in STORED:
        return _chain(method, model_params, params, compute_dtype, like)
    return None


def _linear(
    model_params: Sequence[Mapping[str, Any]], params: Mapping[str, Any], like: np.ndarray
) -> DirectMath | None:
    """methods/linear.py's weights: float32, and their sum, added in order, as the divisor."""
    weights = tuple(np.float32(float(p["weight"])) for p in model_params)
    divisor = np.float32(1.0)
    if params.get("normalize", True):
        if len(weights) > MAX_SUMMED:
            return None
        divisor = np.float32(0.0)
        for weight in weights:
            divisor = np.float32(divisor + weight)
    return DirectMath(True, weights, divisor, False, False, np.float32(1.0), like)


def _chain(
    method: str,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    compute_dtype: str,
    like: np.ndarray,
) -> DirectMath | None:
    """task_arithmetic.merge_task_vectors with every entry kept: its weights rounded to the
    compute dtype, its defaults the method table's."""
    densities = [float(p.get("density", 1.0)) for p in model_params]
    cut = method != _NEVER_SPARSIFIES and any(d < 1 for d in densities)
    rescale = bool(params.get("rescale", METHODS[method].global_params["rescale"].default))
    if cut and (method != _CUT_BY_MAGNITUDE or any(d <= 0 for d in densities) or rescale):
        return None  # a random drop, breadcrumbs' cut, a rescaled or empty one: torch's
    if compute_dtype == "float32" and len(model_params) > MAX_SUMMED:
        return None
    weights = tuple(_rounded(float(p["weight"]), compute_dtype) for p in model_params)
    normalize = params.get("normalize", METHODS[method].global_params["normalize"].default)
    return DirectMath(
        linear=False,
        weights=weights,
        divisor=np.float32(1.0),
        elect_sign=method in SIGN_ELECTING,
        normalize=bool(normalize),
        scale=np.float32(float(params.get("lambda", 1.0))),
        like=like,
        densities=tuple(densities) if cut else (),
    )


def _rounded(value: float, dtype: str) -> np.float32:
    """`value` as torch.tensor(value, dtype=dtype) holds it, as a float32: to float32, then
    for bf16 to its 8 bits of mantissa, to nearest even."""
    single = np.float32(value)
    if dtype == "float32" or not np.isfinite(single):
        return single
    bits = int(np.array(single).view(np.uint32))
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return np.float32(np.array(bits & 0xFFFFFFFF, dtype=np.uint32).view(np.float32)[()])
