"""Row-block streaming for the methods outside the task-arithmetic family.

Each is one of four shapes, and streams with the whole-tensor path's bits:
- entry by entry (passthrough, nearswap, ram; nuslerp without flattening and model_stock's
  `filter_wise`, whose vectors are rows): the method itself on each block of rows;
- scalars from dot products of whole tensors (slerp, nuslerp flattened, model_stock, and
  karcher and multislerp, whose iterations build only combinations of the inputs): a first
  pass sums them block by block (blocks.Gram, as the whole path does), then the combination
  runs on each block; nuslerp's columns (`nuslerp_row_wise`) likewise, with a·a, b·b and a·b
  per column summed in fixed row chunks (slerp.ColumnDots);
- counts over the whole tensor (ramplus_tl's overlap boost): a first pass adds up integers;
- a fence from quantiles (arcee_fusion): a first pass gathers the row-local importances, all of
  them or the whole path's random sample, then each block is fused.

Every method outside the TIES family (streamed.py) and sce (streamed_sce.py) streams here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from lossless.methods import arcee_fusion, karcher, model_stock, multislerp, ram, slerp
from lossless.methods.blocks import Gram
from lossless.methods.table import METHODS

ELEMENTWISE = {"passthrough", "nearswap", "ram"}
SPHERICAL = {"karcher": karcher, "multislerp": multislerp}  # coefficients from a Gram matrix
STREAMED = (
    ELEMENTWISE | {"slerp", "nuslerp", "model_stock", "ramplus_tl", "arcee_fusion"} | set(SPHERICAL)
)


def stream_vectors(
    method: str,
    rows: Any,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    blocks: list[tuple[int, int]],
    dtype: torch.dtype,
    out_dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """The output row blocks of `method`; `rows` as streamed.Rows, inputs cast to `dtype` as
    the executor casts whole tensors; `generator` as the whole path gets it."""
    count = len(model_params)
    has_base = bool(getattr(rows, "has_base", True)) and METHODS[method].base != "unused"

    def read(lo: int, hi: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        tensors = [rows.model(i, lo, hi).to(dtype) for i in range(count)]
        base = rows.base(lo, hi).to(dtype) if has_base else None
        return tensors, base

    combine = _combiner(method, read, blocks, model_params, params, generator)
    for lo, hi in blocks:
        tensors, base = read(lo, hi)
        yield combine(tensors, base).to(out_dtype)


def _gram(read: Any, blocks: list[tuple[int, int]], vectors: Any, count: int) -> Gram:
    gram = Gram(count)
    for lo, hi in blocks:
        gram.add([v.reshape(-1) for v in vectors(*read(lo, hi))])
    return gram


def _combiner(
    method: str,
    read: Any,
    blocks: list[tuple[int, int]],
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None = None,
) -> Any:
    """(tensors, base) of a block → the merged block; any whole-tensor pass made first."""
    fn = METHODS[method].load()
    if method in ELEMENTWISE or (method == "model_stock" and params.get("filter_wise")):
        return lambda tensors, base: fn(tensors, base, model_params, params)
    if method == "slerp":
        t = float(params["t"])

        def both(tensors: list[torch.Tensor], base: torch.Tensor) -> list[torch.Tensor]:
            work = slerp.work_dtype(base)
            return [base.to(work), tensors[0].to(work)]

        coefficients = slerp.slerp_coefficients(t, _gram(read, blocks, both, 2))
        return lambda tensors, base: slerp.slerp_combine(coefficients, base, tensors[0])
    if method == "nuslerp":
        flatten, row_wise = params.get("nuslerp_flatten", True), params.get("nuslerp_row_wise")
        if not flatten and not row_wise:  # rows: entry by entry as far as blocks go
            return lambda tensors, base: fn(tensors, base, model_params, params)
        t = slerp.nuslerp_t([float(p["weight"]) for p in model_params])

        def deltas(tensors: list[torch.Tensor], base: torch.Tensor | None) -> list[torch.Tensor]:
            return list(tensors) if base is None else [x - base for x in tensors]

        if flatten:
            sines = slerp.nuslerp_flat_coefficients(t, _gram(read, blocks, deltas, 2))
            combine = functools.partial(slerp.nuslerp_flat_combine, t, sines)
        else:  # columns: each column's dot products over every row first
            dots = slerp.ColumnDots()
            for lo, hi in blocks:
                dots.add(*deltas(*read(lo, hi)))
            combine = functools.partial(
                slerp.nuslerp_column_combine, t, slerp.nuslerp_column_sines(t, dots)
            )

        def nuslerp_block(tensors: list[torch.Tensor], base: torch.Tensor | None) -> torch.Tensor:
            merged = combine(*deltas(tensors, base))
            return merged if base is None else base + merged

        return nuslerp_block
    if method == "model_stock":
        count = len(model_params)

        def offsets(tensors: list[torch.Tensor], base: torch.Tensor) -> list[torch.Tensor]:
            return [w - base for w in tensors]

        ratio = model_stock.ratio_from_gram(_gram(read, blocks, offsets, count), count)
        return lambda tensors, base: model_stock.stock_combine(ratio, tensors, base)
    if method in SPHERICAL:  # Σ cᵢ·xᵢ (+ base), c from the Gram matrix of the (task) vectors
        module, count = SPHERICAL[method], len(model_params)
        gram = _gram(read, blocks, module.gram_vectors, count) if count > 1 else Gram(1)
        coefficients = module.coefficients(gram, model_params, params)
        return lambda tensors, base: module.combine(coefficients, tensors, base)
    if method == "ramplus_tl":
        r, alpha, epsilon = ram.boost_params(params)
        shared = unique = torch.zeros(len(model_params), dtype=torch.int64)
        for lo, hi in blocks:
            tensors, base = read(lo, hi)
            if tensors:
                more_shared, more_unique = ram.overlap_counts(
                    ram.contributions(tensors, base, epsilon)
                )
                shared, unique = shared + more_shared.cpu(), unique + more_unique.cpu()
        boost = ram.overlap_boost(shared, unique, r, alpha, epsilon)
        return lambda tensors, base: (
            ram.merge_boosted(tensors, base, epsilon, boost.to(base.device)) if tensors else base
        )
    if method == "arcee_fusion":

        def pair(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            tensors, base = read(lo, hi)
            return tensors[0], base

        fence = arcee_fusion.streamed_fence(pair, blocks, generator)
        return lambda tensors, base: arcee_fusion.fuse(tensors[0], base, fence)
    raise ValueError(f"{method} does not stream")
