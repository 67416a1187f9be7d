"""The numba kernels behind methods/fused.py (imported on the first fused merge: numba takes
0.3 s to import, which `lossless validate` and the rest need not pay).

Loads, stores and roundings are chosen by the arrays' integer types at compile time (bf16 is
stored as int16, float32 as int32), and the chain's flags are closure constants, so each
kernel is straight-line arithmetic per entry that LLVM vectorises. Every helper is inlined.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from llvmlite import ir

from lossless.methods.jit import intrinsic, numba, overload, types


def _llvm(signature: Any, emit: Any) -> Any:
    """A numba intrinsic of one LLVM instruction: `emit(builder, args)` under `signature`."""

    def codegen(context: Any, builder: Any, sig: Any, values: Any) -> Any:
        return emit(builder, values)

    def unary(typingctx: Any, a: Any) -> Any:  # numba's typing takes no *args
        return signature, codegen

    def ternary(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        return signature, codegen

    return intrinsic(unary if len(signature.args) == 1 else ternary)


# the float32 whose bits are these (uint32), and back: bitcasts, no instruction at all
_f32_from_bits = _llvm(types.float32(types.uint32), lambda b, v: b.bitcast(v[0], ir.FloatType()))
_bits_of_f32 = _llvm(types.uint32(types.float32), lambda b, v: b.bitcast(v[0], ir.IntType(32)))
# a·b + c rounded once (float32), as torch's addcmul computes on x86
_fma = _llvm(types.float32(types.float32, types.float32, types.float32), lambda b, v: b.fma(*v))


def _load(array, j):  # type: ignore[no-untyped-def]  # numba matches these names
    """Entry j of a bf16 (stored as int16) or float32 (as int32) array as float32."""


@overload(_load, inline="always")
def _load_typed(array, j):  # type: ignore[no-untyped-def]
    if array.dtype == types.int16:
        return lambda array, j: _f32_from_bits(np.uint32(np.uint16(array[j])) << np.uint32(16))
    return lambda array, j: _f32_from_bits(np.uint32(array[j]))


def _to(x, like):  # type: ignore[no-untyped-def]
    """x rounded to `like`'s dtype (bf16 as int16: to nearest even, as torch rounds finite
    values) and back to float32."""


@overload(_to, inline="always")
def _to_typed(x, like):  # type: ignore[no-untyped-def]
    if like.dtype == types.int16:
        return lambda x, like: _f32_from_bits(_bf16_bits(x) << np.uint32(16))
    return lambda x, like: x


def _store(out, j, x):  # type: ignore[no-untyped-def]
    """x (float32) into entry j of a bf16 (int16) or float32 (int32) array."""


@overload(_store, inline="always")
def _store_typed(out, j, x):  # type: ignore[no-untyped-def]
    if out.dtype == types.int16:

        def store_bf16(out, j, x):  # type: ignore[no-untyped-def]
            out[j] = np.int16(np.uint16(_bf16_bits(x)))

        return store_bf16

    def store_f32(out, j, x):  # type: ignore[no-untyped-def]
        out[j] = np.int32(_bits_of_f32(x))

    return store_f32


@numba.njit(inline="always")
def _bf16_bits(x: Any) -> Any:
    bits = _bits_of_f32(x)
    return (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


@numba.njit(inline="always")
def _worse(worst: Any, x: Any) -> Any:
    """The larger of `worst` and x's exponent bits (int32), which reach _NOT_FINITE exactly
    when x is inf or NaN. A select on int32 keeps the loop vectorised, where a branch out
    of it, or numba's max on uint32, would not."""
    exponent = np.int32(_bits_of_f32(x) & np.uint32(0x7F800000))
    return exponent if exponent > worst else worst


_NOT_FINITE = np.int32(0x7F800000)


@numba.njit(nogil=True, cache=True)
def linear(models: Any, weights: Any, divisor: Any, like: Any, out: Any) -> bool:
    """divisor 1 when not normalizing (x / 1 is x). A non-finite input makes the result
    non-finite, so only the results are checked."""
    worst = np.int32(0)
    for j in range(out.shape[0]):
        total = np.float32(0.0)
        for i in range(len(models)):
            total = _fma(_to(_load(models[i], j), like), weights[i], total)
        merged = _to(total / divisor, like)
        worst = _worse(worst, merged)
        _store(out, j, merged)
    return worst != _NOT_FINITE


@numba.njit(inline="always")
def _delta(model: Any, base: Any, like: Any, j: int) -> Any:
    """Entry j of model − base in the compute dtype (`like`'s), unrounded: float32."""
    return _to(_load(model, j), like) - _to(_load(base, j), like)


@numba.njit(nogil=True, cache=True)
def task_vector(model: Any, base: Any, like: Any, out: Any) -> None:
    """model − base in the compute dtype (`like`'s) into `out` (its integer type): the task
    vector a TIES cut ranks, each entry as _task_row makes it before the trim."""
    for j in range(out.shape[0]):
        _store(out, j, _delta(model, base, like, j))


@numba.njit(nogil=True, cache=True)
def magnitudes(model: Any, base: Any, like: Any, out: Any) -> None:
    """|model − base| in the compute dtype (`like`'s) into `out` (float32): the keys a TIES
    cut ranks (top_cut.ranking_magnitudes of task_vector's entries), in one pass."""
    for j in range(out.shape[0]):
        out[j] = abs(_to(_delta(model, base, like, j), like))


@numba.njit(nogil=True, cache=True)
def magnitude_histogram(model: Any, base: Any, like: Any, high: Any) -> bool:
    """Adds to `high` (65,536 int64 counts) the high 16 bits of each float32 |model − base|
    in the compute dtype (`magnitudes`' keys): radix.kth_magnitude's first pass, without the
    keys. True when some key has low bits too (never for a bf16 compute dtype)."""
    low = np.uint32(0)
    for j in range(model.shape[0]):
        bits = _bits_of_f32(abs(_to(_delta(model, base, like, j), like)))
        high[bits >> np.uint32(16)] += 1
        low |= bits & np.uint32(0xFFFF)
    return low != 0


@numba.njit(inline="always")
def _task_row(
    model: Any, anchor: Any, weight: Any, cut: Any, forced: Any, like: Any, j: int
) -> Any:
    """The trimmed, weighted task vector's entry j. The trim keeps |x| > cut (hardshrink's
    rule; NaN is kept; cut -1 keeps every entry) or a `forced` tie at the cut, else +0 as
    hardshrink gives. torch's chain skips ×1.0, which changes no bit; here it is always made: a
    select between the two would stop the vectorising."""
    r = _to(_to(_load(model, j), like) - anchor, like)
    r = r if forced or not abs(r) <= cut else np.float32(0.0)
    return _to(r * weight, like)


_ZERO, _ONE, _TINY = np.float32(0.0), np.float32(1.0), np.float32(1e-8)
_NONE = np.uint32(0)  # no model's tie forced


@numba.njit(inline="always")
def _entry(
    models: Any,
    base: Any,
    weights: Any,
    cuts: Any,
    forced: Any,
    scale: Any,
    like: Any,
    out: Any,
    j: int,
    flags: tuple[bool, bool, bool],
) -> Any:
    """Entry j of the chain into `out`, returned too; bit i of `forced` keeps model i's entry
    whatever its cut. The flags (elect_sign, normalize, scaled) are the calling kernel's
    constants, folded here. Only the results are checked for inf and NaN: the agreement mask
    multiplies as torch's chain does, so a NaN or inf task vector, elected or not, reaches the
    result."""
    elect_sign, normalize, scaled = flags
    anchor = _to(_load(base, j), like)
    total = _ZERO
    for i in range(len(models)):  # the task vectors' sum, from +0
        bit = (forced >> np.uint32(i)) & np.uint32(1)
        total = total + _task_row(models[i], anchor, weights[i], cuts[i], bit, like, j)
    if elect_sign:  # the agreeing entries (the task vectors made again: cheaper)
        sign = _ONE if total >= _ZERO else -_ONE  # the elected sign; ties go to +
        merged, divisor = _ZERO, _ZERO
        for i in range(len(models)):
            bit = (forced >> np.uint32(i)) & np.uint32(1)
            r = _task_row(models[i], anchor, weights[i], cuts[i], bit, like, j)
            mask = _ONE if r * sign > _ZERO else _ZERO  # zeros never agree
            merged = merged + r * mask  # NaN·0 is NaN, as in torch's chain
            divisor = divisor + weights[i] * mask
        merged = _to(merged, like)
        if normalize:
            divisor = _to(divisor, like)
            merged = _to(merged / (_ONE if divisor == _ZERO else divisor), like)
    else:
        merged = _to(total, like)
        if normalize:
            divisor = _ZERO
            for i in range(len(models)):
                divisor = divisor + weights[i]
            divisor = _to(divisor, like)
            merged = _to(merged / (_ONE if abs(divisor) < _TINY else divisor), like)
    if scaled:
        merged = _to(merged * scale, like)
    result = _to(anchor + merged, like)
    _store(out, j, result)
    return result


@functools.cache
def combine_kernel(elect_sign: bool, normalize: bool, scaled: bool) -> Any:
    """The chain's kernels for these flags, compiled once each (cached on disk): the pass over
    a range, and the fix-up of the entries where a model keeps a tie at its cut. The flags are
    the closure's constants: numba folds them, where a branch per entry (or a numba literal
    argument, which stays a run-time value) keeps LLVM from vectorising the loop. A closure
    holding only constants is cached by numba; one holding another jitted function would be
    compiled again in every process (its pickle differs), so _entry is a global."""

    @numba.njit(nogil=True, cache=True)
    def combine(
        models: Any, base: Any, weights: Any, cuts: Any, scale: Any, like: Any, out: Any
    ) -> bool:
        worst, flags = np.int32(0), (elect_sign, normalize, scaled)
        for j in range(out.shape[0]):
            result = _entry(models, base, weights, cuts, _NONE, scale, like, out, j, flags)
            worst = _worse(worst, result)
        return worst != _NOT_FINITE

    @numba.njit(nogil=True, cache=True)
    def fix_ties(
        models: Any,
        base: Any,
        weights: Any,
        cuts: Any,
        scale: Any,
        like: Any,
        out: Any,
        tied: Any,
        start: int,
    ) -> bool:
        """The entries where some model keeps a tie at its cut, made again with those models'
        entries kept: `tied[i]` holds model i's kept tied entries in this block (sorted flat
        indices of the tensor, the block starting at `start`), walked together as a merge, so
        no union of them is ever held."""
        cursors = np.zeros(len(tied), dtype=np.int64)
        worst, flags = np.int32(0), (elect_sign, normalize, scaled)
        while True:
            at = np.int64(-1)  # the next entry any model keeps a tie at
            for i in range(len(tied)):
                if cursors[i] < tied[i].size and (at < 0 or tied[i][cursors[i]] < at):
                    at = tied[i][cursors[i]]
            if at < 0:
                return worst != _NOT_FINITE
            forced = np.uint32(0)
            for i in range(len(tied)):
                if cursors[i] < tied[i].size and tied[i][cursors[i]] == at:
                    forced |= np.uint32(1) << np.uint32(i)
                    cursors[i] += 1
            j = int(at - start)
            result = _entry(models, base, weights, cuts, forced, scale, like, out, j, flags)
            worst = _worse(worst, result)

    return combine, fix_ties
