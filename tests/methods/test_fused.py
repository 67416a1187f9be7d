"""The fused kernels (methods/fused.py) against torch's chain, bit for bit."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lossless.methods import fused, sparsify, task_arithmetic, top_cut
from lossless.methods.linear import linear

pytestmark = pytest.mark.skipif(not fused.ENABLED, reason="numba is absent, or LOSSLESS_FUSED=0")

N = 65536 + 4099  # a whole block and a ragged tail: torch's vector and scalar loops both run


def inputs(kind: str, count: int, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A base and fine-tunes: small deltas; few distinct values (ties, cancellations, -0 and
    zero deltas); or magnitudes from subnormal to near overflow."""
    g = torch.Generator().manual_seed(count * 7 + len(kind))
    if kind == "small":
        base = torch.randn(N, generator=g)
        models = [base + torch.randn(N, generator=g) * 0.01 for _ in range(count)]
    elif kind == "ties":
        base = torch.randint(-3, 4, (N,), generator=g).float() / 2
        models = [base + torch.randint(-2, 3, (N,), generator=g).float() / 4 for _ in range(count)]
        base[::5] = -0.0
        for model in models:
            model[::7] = -0.0
    else:

        def wide() -> torch.Tensor:
            exponent = torch.randint(-140, 120, (N,), generator=g).float()
            return torch.randn(N, generator=g) * torch.exp2(exponent)

        base = wide()
        models = [base + wide() for _ in range(count)]
    return base.to(dtype), [m.to(dtype) for m in models]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32)


def torch_chain(monkeypatch: pytest.MonkeyPatch, run: Callable[[], torch.Tensor]) -> torch.Tensor:
    with monkeypatch.context() as patch:
        patch.setattr(fused, "ENABLED", False)
        return run()


def chain(
    models: list[torch.Tensor],
    base: torch.Tensor,
    model_params: list[dict[str, float]],
    params: dict[str, float],
    elect: bool,
    normalize: bool,
    compute: torch.dtype,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """task_arithmetic.combine at density 1 (the kernel or torch, as fused.ENABLED says)."""
    out = torch.empty(N, dtype=out_dtype)
    keep = [sparsify.KEEP_ALL] * len(models)
    task_arithmetic.combine(
        models, base, keep, model_params, params, elect, normalize, compute, out
    )
    return out


# (stored dtype, compute dtype, output dtype)
DTYPES = [
    (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    (torch.float32, torch.float32, torch.float32),
    (torch.bfloat16, torch.float32, torch.bfloat16),
    (torch.float32, torch.bfloat16, torch.bfloat16),
]
# (weight, elect_sign, normalize, lambda): TIES as mergekit's defaults, weighted, unnormalised,
# task arithmetic, and a lambda
CHAINS = [
    (1.0, True, True, 1.0),
    (0.5, True, True, 1.0),
    (0.7, True, False, 1.0),
    (1.0, False, False, 1.0),
    (0.3, False, True, 0.5),
    (1.0, True, True, 1.3),
]


# every chain with bf16 throughout (the common case) at 1, 3 and 4 models; the other dtypes at
# 3 models on three chains (each case is a kernel numba compiles: about a second each)
CASES = [(DTYPES[0], count, CHAINS) for count in (1, 3, 4)] + [
    (dtypes, 3, [CHAINS[1], CHAINS[2], CHAINS[4]]) for dtypes in DTYPES[1:]
]


@pytest.mark.parametrize(
    ("dtypes", "count", "chains"),
    CASES,
    ids=[f"{'-'.join(str(t)[6:] for t in d)}-{c}" for d, c, _ in CASES],
)
@pytest.mark.parametrize("kind", ["small", "ties", "wide"])
def test_chain_has_torchs_bits(
    dtypes: tuple[torch.dtype, ...],
    count: int,
    chains: list[tuple[float, bool, bool, float]],
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored, compute, out_dtype = dtypes
    base, models = inputs(kind, count, stored)
    for weight, elect, normalize, scale in chains:
        model_params = [{"weight": weight * (1 + 0.1 * i)} for i in range(count)]
        params = {"lambda": scale}
        run = functools.partial(
            chain, models, base, model_params, params, elect, normalize, compute, out_dtype
        )
        expected = torch_chain(monkeypatch, run)
        got = torch.empty(N, dtype=out_dtype)
        keep = [sparsify.KEEP_ALL] * count
        assert fused.combine_into(
            models, base, keep, model_params, params, elect, normalize, compute, got
        ), "the fused kernel ran"
        assert torch.equal(bits(got), bits(expected)), (weight, elect, normalize, scale)
        assert torch.equal(bits(run()), bits(expected))  # combine takes the kernel's result


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: "-".join(str(t)[6:] for t in d))
@pytest.mark.parametrize("kind", ["small", "wide"])
@pytest.mark.parametrize("normalize", [True, False])
def test_linear_has_torchs_bits(
    dtypes: tuple[torch.dtype, ...], kind: str, normalize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored, compute, out_dtype = dtypes
    _, models = inputs(kind, 3, stored)
    model_params = [{"weight": 0.3 + 0.2 * i} for i in range(3)]  # products that need an fma
    params = {"normalize": normalize}

    def run() -> torch.Tensor:
        return linear(models, None, model_params, params, dtype=compute, out_dtype=out_dtype)

    expected = torch_chain(monkeypatch, run)
    weights = [float(p["weight"]) for p in model_params]
    divisor = float(torch.tensor(weights).sum()) if normalize else None
    got = torch.empty(N, dtype=out_dtype)
    assert fused.linear_into(models, weights, divisor, compute, got), "the fused kernel ran"
    assert torch.equal(bits(got), bits(expected))


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("kind", ["small", "ties"])
@pytest.mark.parametrize("start", [0, 4096 + 37])
def test_ties_trim_has_torchs_bits(
    compute: torch.dtype, kind: str, start: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TIES at density 0.5 and 0.3: the kernel trims at each model's cut and keeps the ties
    at it that torch's sort order keeps, on a block starting at `start` (a streamed tensor's
    rows) as on the whole."""
    base, models = inputs(kind, 3, torch.bfloat16)
    model_params = [{"weight": 0.5, "density": d} for d in (0.5, 0.3, 1.0)]
    kept = [
        sparsify.top_magnitude(task_arithmetic.task_vector(m, base, compute), p["density"])
        for m, p in zip(models, model_params, strict=True)
    ]
    cuts = [k.select for k in kept[:2]]
    assert all(isinstance(c, top_cut.TopCut) and c.trims for c in cuts)
    if kind == "ties":  # some entries equal to the cut are kept, some dropped
        assert all(c.tied.size for c in cuts)
    block = slice(start, start + 40000)
    parts = [m[block] for m in models]

    def run() -> torch.Tensor:
        out = torch.empty(40000, dtype=torch.bfloat16)
        task_arithmetic.combine(
            parts, base[block], kept, model_params, {}, True, True, compute, out, start
        )
        return out

    expected = torch_chain(monkeypatch, run)
    got = torch.empty(40000, dtype=torch.bfloat16)
    assert fused.combine_into(
        parts, base[block], kept, model_params, {}, True, True, compute, got, start
    ), "the fused kernel ran"
    assert torch.equal(bits(got), bits(expected))
    # and the merge as the table runs it, on the whole tensor
    whole = functools.partial(task_arithmetic.ties, models, base, model_params, {})
    assert torch.equal(bits(whole()), bits(torch_chain(monkeypatch, whole)))


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("kind", ["small", "ties", "wide"])
def test_magnitudes_have_torchs_bits(kind: str, stored: torch.dtype, compute: torch.dtype) -> None:
    """The streamed TIES cut's keys (methods/streamed.py): |model − base| in the compute dtype,
    as float32, equal bit for bit to torch's task vector and ranking_magnitudes, -0 deltas
    and subnormals included."""
    base, (model,) = inputs(kind, 1, stored)
    got = fused.magnitudes(model, base, compute)
    want = top_cut.ranking_magnitudes(task_arithmetic.task_vector(model, base, compute))
    assert got is not None and got.dtype == torch.float32 and want.dtype == torch.float32
    assert got.view(torch.int32).equal(want.view(torch.int32))
    assert fused.magnitudes(model.half(), base.half(), compute) is None  # torch's to make


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("kind", ["small", "ties", "wide"])
def test_the_magnitude_histogram_counts_what_torch_counts(kind: str, compute: torch.dtype) -> None:
    """The radix select's first pass by the kernels (streamed TIES cuts): the high 16 bits
    of torch's magnitudes counted, added to what `high` held, and whether any has low bits."""
    base, (model,) = inputs(kind, 1, torch.bfloat16)
    keys = top_cut.ranking_magnitudes(task_arithmetic.task_vector(model, base, compute))
    high = torch.full((1 << 16,), 3, dtype=torch.int64)
    low_bits = fused.add_magnitude_histogram(model, base, compute, high)
    want = torch.bincount(keys.view(torch.int32) >> 16, minlength=1 << 16) + 3
    assert high.equal(want)
    assert low_bits is bool(torch.any(keys.view(torch.int32) & 0xFFFF))
    assert low_bits is (compute == torch.float32 and kind != "ties")
    assert fused.add_magnitude_histogram(model.half(), base.half(), compute, high) is None


def test_a_non_finite_result_is_left_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    base, models = inputs("small", 3, torch.bfloat16)
    models[1][100] = float("inf")
    models[2][200] = float("nan")
    params = [{"weight": 1.0}] * 3
    keep = [sparsify.KEEP_ALL] * 3
    assert not fused.combine_into(
        models, base, keep, params, {}, True, True, torch.bfloat16, base.clone()
    )
    assert not fused.linear_into(models, [1.0] * 3, 3.0, torch.bfloat16, base.clone())

    run = functools.partial(chain, models, base, params, {}, True, True, *[torch.bfloat16] * 2)
    result = run()
    assert torch.equal(bits(result), bits(torch_chain(monkeypatch, run)))
    assert result[100].isinf()  # an inf delta agrees with the sign it makes


def test_a_nan_delta_that_is_not_elected_still_reaches_the_result() -> None:
    """torch's chain multiplies by the mask, and NaN·0 is NaN: so must the kernel, which then
    leaves the block to torch (with --allow-non-finite a NaN input may reach the chain)."""
    base, models = inputs("small", 3, torch.bfloat16)
    models[0][::3] = float("nan")
    params = [{"weight": 1.0}] * 3
    out = torch.empty(N, dtype=torch.bfloat16)
    assert not fused.combine_into(
        models, base, [sparsify.KEEP_ALL] * len(models), params, {}, True, True, torch.bfloat16, out
    )


def test_what_the_kernels_do_not_cover() -> None:
    base, models = inputs("small", 5, torch.float32)
    params = [{"weight": 1.0}] * 5
    out = torch.empty(N)
    # five float32 rows: torch sums those its own way
    assert not fused.combine_into(
        models, base, [sparsify.KEEP_ALL] * len(models), params, {}, True, True, torch.float32, out
    )
    half = [m.half() for m in models]
    assert not fused.combine_into(
        half, base, [sparsify.KEEP_ALL] * 5, params, {}, True, True, torch.float32, out
    )
    mixed = [models[0], models[1].bfloat16()]
    assert not fused.linear_into(mixed, [1.0, 1.0], 2.0, torch.float32, out)
    assert not fused.linear_into(models, [1.0] * 5, 5.0, torch.float64, out)
    assert not fused.available(base[::2])  # not contiguous


def test_the_kernels_compile_once_and_load_from_the_disk_cache_after(tmp_path: Path) -> None:
    """numba caches a kernel only if its closure pickles the same in every process: a second
    process must load both kernels from the cache, not compile them again (seconds a merge)."""
    child = (
        "import torch\n"
        "from lossless.methods import fused, fused_kernels, sparsify\n"
        "x = [torch.ones(8, dtype=torch.bfloat16)] * 2\n"
        "keep = [sparsify.KEEP_ALL] * 2\n"
        "p = [{'weight': 1.0}] * 2\n"
        "assert fused.combine_into(x, x[0], keep, p, {}, True, True, torch.bfloat16, x[0].clone())\n"
        "assert fused.linear_into(x, [1.0, 1.0], 2.0, torch.bfloat16, x[0].clone())\n"
        "combine, _ = fused_kernels.combine_kernel(True, True, False)\n"
        "stats = [combine.stats, fused_kernels.linear.stats]\n"
        "print(sum(len(s.cache_hits) for s in stats), sum(len(s.cache_misses) for s in stats))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs == [["0", "2"], ["2", "0"]]
