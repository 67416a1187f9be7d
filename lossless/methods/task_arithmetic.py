"""The task-arithmetic family: task_arithmetic, ties, dare_*, breadcrumbs*, della*.

Every member is the same chain (peft merge_utils style), differing only in the sparsifier and
whether signs are elected:

    task vectors (model − base) → sparsify each → × weight → [elect sign → disjoint mask]
    → sum → [÷ sum of (kept) weights if normalize] → × lambda → base + result

Defaults follow mergekit 0.1.5 (`normalize`: ties and della True, the rest False; `rescale`:
dare_* and della* True, the rest False; `lambda` 1 for all).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lossless.methods import fused, sparsify
from lossless.methods.blocks import BLOCK, block_slices
from lossless.methods.top_cut import float_mask

# (a function making the whole task vector, per-model params, rescale, generator) → the entries
# that survive. A function, not the tensor: a sparsifier may overwrite what it gets and make it
# again if it needs it later (one pass over the inputs).
Sparsifier = Callable[
    [Callable[[], torch.Tensor], Mapping[str, Any], bool, torch.Generator | None], sparsify.Kept
]


def task_vector(
    tensor: torch.Tensor,
    base: torch.Tensor,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`tensor − base` in `dtype`, cast block by block (no whole-tensor copies of the inputs),
    into `out` if given."""
    if out is None:
        out = torch.empty(tensor.shape, dtype=dtype, device=tensor.device)
    flat, model, ref = out.view(-1), tensor.reshape(-1), base.reshape(-1)
    size = min(BLOCK, flat.numel())
    anchor = None if ref.dtype == dtype else torch.empty(size, dtype=dtype, device=out.device)
    for part in block_slices(flat.numel()):
        n = min(part.stop, flat.numel()) - part.start
        _task_vector_block(
            model[part], ref[part] if anchor is None else anchor[:n].copy_(ref[part]), flat[part]
        )
    return out


def exact_in(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` for arithmetic with a `dtype` tensor: as is when torch's type promotion takes it
    to `dtype` exactly (bf16 or fp16 next to fp32), saving a cast per block; cast otherwise.
    The other operand must be `dtype` already, or the op would run in the narrower type."""
    return tensor if torch.promote_types(tensor.dtype, dtype) == dtype else tensor.to(dtype)


def weight_column(model_params: Sequence[Mapping[str, Any]], like: torch.Tensor) -> torch.Tensor:
    """Weights shaped [n, 1, 1, ...] to broadcast against stacked deltas [n, *shape]."""
    weights = torch.tensor(
        [float(p["weight"]) for p in model_params], dtype=like.dtype, device=like.device
    )
    return weights.view(-1, *([1] * (like.dim() - 1)))


def sum_models(stacked: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`stacked.sum(dim=0)` with the same bits (into `out` if given). For half floats torch adds
    the rows in order onto +0 in float32 and rounds once; doing that here is 1.8× faster on CPU
    for a few models (tests/methods/test_task_arithmetic.py checks the bits, signed zeros and
    cancellations included). float32 sums of 5 or more rows are split by torch differently:
    they stay torch's."""
    if stacked.dtype not in (torch.bfloat16, torch.float16):
        return stacked.sum(dim=0) if out is None else out.copy_(stacked.sum(dim=0))
    total = stacked[0].float()  # the first row onto +0 is the first row, but for -0 (below)
    for row in stacked[1:]:
        total.add_(row)
    total.add_(0.0)  # where every row is -0, torch's sum from +0 gives +0; nothing else changes
    return total.to(stacked.dtype) if out is None else out.copy_(total)


def elect_sign_mask(weighted: torch.Tensor) -> torch.Tensor:
    """1.0 where an entry's sign equals the sign of the sum over models (ties go to +), else
    0.0, in weighted's dtype (float_mask: the values of mergekit's bool or int8 mask).

    Zeros never agree, so a trimmed entry counts neither in the sum nor in the divisor.
    """
    total = sum_models(weighted)
    majority = torch.ge(total, 0, out=float_mask(total)) * 2 - 1
    return torch.eq(weighted.sign(), majority, out=float_mask(weighted))


def plain_merge(weighted: torch.Tensor, weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Sum of all weighted deltas, divided by the weight sum (unless it is ~0) if `normalize`."""
    merged = sum_models(weighted)
    if normalize:
        divisor = sum_models(weights)
        divisor.masked_fill_(divisor.abs() < 1e-8, 1)
        merged = merged / divisor
    return merged


def merge_task_vectors(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    sparsifier: Sparsifier | None,
    elect_sign: bool,
    normalize_default: bool,
    rescale_default: bool,
    generator: torch.Generator | None,
    dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The shared chain; `sparsifier` None = keep every entry, `elect_sign` = TIES consensus.

    Inputs may come in their stored dtype: the math runs in `dtype` (default: the base's) and
    the result is `out_dtype` (default `dtype`). First each task vector is sparsified whole, one
    model at a time (the trim needs the whole tensor); then the elementwise rest runs block by
    block, so besides the inputs only one task vector and one block are ever held.
    """
    dtype = dtype or base.dtype
    out_dtype = out_dtype or dtype
    if not tensors:
        return base.to(dtype).to(out_dtype)
    rescale = bool(params.get("rescale", rescale_default))
    normalize = bool(params.get("normalize", normalize_default))
    kept = [sparsify.KEEP_ALL] * len(tensors)
    if sparsifier is not None and any(_density(p) < 1 for p in model_params):
        # one task vector's memory for every model in turn: a Kept never holds on to it, and
        # fresh pages cost more than the subtraction that fills them
        scratch = torch.empty(base.shape, dtype=dtype, device=base.device)
        kept = [
            sparsify.KEEP_ALL  # what every sparsifier gives at density 1, with no draw made
            if _density(p) >= 1
            else sparsifier(
                functools.partial(task_vector, tensor, base, dtype, scratch), p, rescale, generator
            )
            for tensor, p in zip(tensors, model_params, strict=True)
        ]
        del scratch
    out = torch.empty(base.shape, dtype=out_dtype, device=base.device)
    combine(tensors, base, kept, model_params, params, elect_sign, normalize, dtype, out)
    return out


def combine(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    kept: Sequence[sparsify.Kept],
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    elect_sign: bool,
    normalize: bool,
    dtype: torch.dtype,
    out: torch.Tensor,
    start: int = 0,
) -> None:
    """The elementwise rest of the chain into `out`, 64K entries at a time. The tensors may be
    a block of rows of the whole ones, beginning at flat entry `start` (a block boundary).

    Every op is the one the whole-tensor chain runs, with the same bits, but in place into
    buffers made once (a fresh 64K-entry temporary costs more than the op filling it), and with
    no op mixing dtypes (torch runs those unvectorised): bf16 inputs are cast, then subtracted."""
    # int8_mask only saves memory in mergekit; the mask's values are the same either way.
    if fused.combine_into(
        tensors, base, kept, model_params, params, elect_sign, normalize, dtype, out, start
    ):
        return  # one fused pass, the same bits (methods/fused.py); torch's ops otherwise
    scale = float(params.get("lambda", 1.0))
    weights = weight_column(model_params, torch.empty(0, 0, dtype=dtype, device=base.device))
    unit = bool((weights == 1).all())  # ×1.0 changes no bit: skipped
    flat, ref = out.view(-1), base.reshape(-1)
    models = [tensor.reshape(-1) for tensor in tensors]
    size, device = min(BLOCK, flat.numel()), base.device
    stacked = torch.empty(len(models), size, dtype=dtype, device=device)  # the task vectors
    agree = torch.empty_like(stacked) if elect_sign else stacked
    anchor_buf = None if ref.dtype == dtype else torch.empty(size, dtype=dtype, device=device)
    merged_buf, extra = (torch.empty(size, dtype=dtype, device=device) for _ in range(2))
    for part in block_slices(flat.numel()):
        n = min(part.stop, flat.numel()) - part.start
        anchor = ref[part] if anchor_buf is None else anchor_buf[:n].copy_(ref[part])
        weighted, merged = stacked[:, :n], merged_buf[:n]
        for row, k, m in zip(weighted, kept, models, strict=True):
            _task_vector_block(m[part], anchor, row)
            k.apply_in_place(row, start + part.start)
        if not unit:
            weighted.mul_(weights)
        if elect_sign:
            mask, scratch = agree[:, :n], extra[:n]
            majority = _sum_rows(weighted, scratch)  # sign of the sum; ties go to +
            torch.ge(majority, 0, out=majority).mul_(2).sub_(1)
            # sign(x) == ±1 exactly where x·(±1) > 0 (zeros and NaN never agree)
            torch.gt(torch.mul(weighted, majority, out=mask), 0, out=mask)
            merged = _sum_rows(weighted.mul_(mask), merged)  # the agreeing entries
            if normalize:  # ÷ the sum of their weights; a zero divisor becomes 1
                divisor = _sum_rows(mask if unit else mask.mul_(weights), scratch)
                divisor.add_(torch.eq(divisor, 0, out=mask[0]))
                merged = torch.div(merged, divisor, out=merged)
        else:
            merged = plain_merge(weighted, weights, normalize)
        if scale != 1:
            merged = merged * scale
        if flat.dtype == dtype:
            torch.add(anchor, merged, out=flat[part])
        else:  # computed in `dtype`, rounded once to out
            flat[part].copy_(torch.add(anchor, merged, out=merged))


def _task_vector_block(model: torch.Tensor, anchor: torch.Tensor, row: torch.Tensor) -> None:
    """`model − anchor` into `row` (`anchor` and `row` in the compute dtype): the cast of a
    stored input to it is exact or the one exact_in would make, so the bits are torch.sub's."""
    if model.dtype == row.dtype:
        torch.sub(model, anchor, out=row)
    else:
        row.copy_(model).sub_(anchor)


def _sum_rows(stacked: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """sum_models(stacked) into `out` for float32; float32 rows added in order onto +0 are
    torch's sum bit for bit for up to 4 rows (tests/methods check it), the rest is torch's."""
    if stacked.dtype != torch.float32 or stacked.shape[0] > 4:
        return sum_models(stacked, out)
    out.zero_()
    for row in stacked:
        out.add_(row)
    return out


def _sparsifier(choose: Callable[..., sparsify.Kept]) -> Sparsifier:
    """A sparsifier from a `Kept` chooser, adding the L1 rescale when asked for."""

    def sparsify_one(
        make_delta: Callable[[], torch.Tensor],
        p: Mapping[str, Any],
        rescale: bool,
        g: torch.Generator | None,
    ) -> sparsify.Kept:
        delta = make_delta()
        kept = choose(delta, p, g)
        return sparsify.with_rescale(delta, kept) if rescale else kept

    return sparsify_one


def _density(p: Mapping[str, Any]) -> float:
    return float(p.get("density", 1.0))


def _top_magnitude(
    make_delta: Callable[[], torch.Tensor],
    p: Mapping[str, Any],
    rescale: bool,
    g: torch.Generator | None,
) -> sparsify.Kept:
    """TIES trim. Without rescale the task vector is not needed after ranking its magnitudes,
    so they are ranked in its memory."""
    if rescale:
        return _sparsifier(lambda d, p, g: sparsify.top_magnitude(d, _density(p)))(
            make_delta, p, rescale, g
        )
    return sparsify.top_magnitude(make_delta(), _density(p), remake=make_delta)


_random = _sparsifier(lambda d, p, g: sparsify.random_entries(d, _density(p), g))
_outliers = _sparsifier(
    lambda d, p, g: sparsify.middle_magnitude(d, _density(p), float(p.get("gamma", 0.01)))
)
_rank_random = _sparsifier(
    lambda d, p, g: sparsify.random_by_rank(d, _density(p), float(p.get("epsilon", 0.15)), g)
)


def _member(
    sparsifier: Sparsifier | None, elect_sign: bool, normalize: bool, rescale: bool, doc: str
) -> Any:
    """One table entry: the shared chain with this member's sparsifier and defaults."""

    def merge(
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor,
        model_params: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        out_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        return merge_task_vectors(
            tensors,
            base,
            model_params,
            params,
            sparsifier=sparsifier,
            elect_sign=elect_sign,
            normalize_default=normalize,
            rescale_default=rescale,
            generator=generator,
            dtype=dtype,
            out_dtype=out_dtype,
        )

    merge.__doc__ = doc
    # what methods/streamed.py needs to run the same member over a tensor's rows
    merge.family = Family(_KINDS[sparsifier], elect_sign, normalize, rescale)  # type: ignore[attr-defined]
    return merge


@dataclass(frozen=True)
class Family:
    """A member's place in the chain: which sparsifier, sign election, and defaults."""

    sparsifier: str | None  # "top", "random", "outliers", "rank_random"
    elect_sign: bool
    normalize: bool
    rescale: bool


_KINDS: dict[Sparsifier | None, str | None] = {
    None: None,
    _top_magnitude: "top",
    _random: "random",
    _outliers: "outliers",
    _rank_random: "rank_random",
}


#                      sparsifier      sign   normalize rescale
task_arithmetic = _member(None, False, False, False, "base + Σ wᵢ·(xᵢ − base), × lambda.")
ties = _member(_top_magnitude, True, True, False, "Top-k trim, sign election, disjoint mean.")
dare_ties = _member(_random, True, False, True, "Random drop + L1 rescale, sign election.")
dare_linear = _member(_random, False, False, True, "Random drop + L1 rescale, plain sum.")
breadcrumbs = _member(_outliers, False, False, False, "Outlier and small cut, plain sum.")
breadcrumbs_ties = _member(_outliers, True, False, False, "Outlier/small cut, sign election.")
della = _member(_rank_random, True, True, True, "Rank-weighted random drop, sign election.")
della_linear = _member(_rank_random, False, False, True, "Rank-weighted random drop, plain sum.")
