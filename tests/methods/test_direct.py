"""The merge math without torch (methods/direct.py) against each method's torch function, bit
for bit, and what it leaves to torch."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from lossless.methods import blocks, direct, fused, replay_trust, sort_replay
from lossless.methods.table import METHODS

pytestmark = pytest.mark.skipif(not blocks.KERNELS, reason="numba is absent, or LOSSLESS_FUSED=0")

N = 65536 + 4099
SAFETENSORS = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}
FAMILY = sorted(m for m, s in METHODS.items() if s.impl.startswith(direct._FAMILY))


def tensors(count: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A base and fine-tunes with ties in sign and magnitude, signed zeros, and wide values."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(-3, 4, (N,), generator=g).float() / 2
    base[::5] = -0.0
    models = []
    for i in range(count):
        model = base + torch.randint(-2, 3, (N,), generator=g).float() / 4
        model[i::7] = -0.0
        model[N // 2 :] = base[N // 2 :] + torch.randn(N - N // 2, generator=g) * 10.0 ** (i - 2)
        models.append(model)
    return base.to(dtype), [m.to(dtype) for m in models]


def bits(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).view(torch.int16 if t.element_size() == 2 else torch.int32).numpy()


def by_torch(
    method: str,
    models: list[torch.Tensor],
    base: torch.Tensor | None,
    mp: Any,
    params: Any,
    **kw: Any,
) -> torch.Tensor:
    """The method's torch function, with the fused kernels off (torch's own ops)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fused, "ENABLED", False)
        patch.setattr(sort_replay, "COMPILED", False)  # numpy's replay of the TIES cut
        return METHODS[method].load()(models, base, mp, params, **kw)


def by_direct(
    method: str,
    models: list[torch.Tensor],
    base: torch.Tensor | None,
    mp: Any,
    params: Any,
    compute: torch.dtype,
    out_dtype: torch.dtype,
) -> np.ndarray | None:
    merge = direct.plan(
        method,
        mp,
        params,
        stored=[SAFETENSORS[m.dtype] for m in models],
        base_stored=None if base is None else SAFETENSORS[base.dtype],
        compute_dtype=str(compute).removeprefix("torch."),
        out_dtype=str(out_dtype).removeprefix("torch."),
    )
    assert merge is not None, method
    out = np.empty(N, dtype=direct.COMPUTED[str(out_dtype).removeprefix("torch.")])
    return (
        out
        if merge.run([bits(m) for m in models], None if base is None else bits(base), out)
        else None
    )


DTYPES = [  # stored, compute, output
    (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    (torch.float32, torch.float32, torch.float32),
    (torch.bfloat16, torch.float32, torch.bfloat16),
    (torch.float32, torch.bfloat16, torch.float32),
]


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: "-".join(str(t)[6:] for t in d))
@pytest.mark.parametrize("method", FAMILY)
@pytest.mark.parametrize("count", [1, 3])
def test_the_chain_at_density_1_is_the_torch_functions(
    method: str, count: int, dtypes: Any
) -> None:
    stored, compute, out_dtype = dtypes
    base, models = tensors(count, stored, seed=count)
    mp = [{"weight": w, "density": 1.0} for w in (0.7, 1.3, -0.45)[:count]]
    for params in ({}, {"normalize": True, "lambda": 0.8}, {"normalize": False}):
        want = by_torch(method, models, base, mp, params, dtype=compute, out_dtype=out_dtype)
        got = by_direct(method, models, base, mp, params, compute, out_dtype)
        assert got is not None
        assert np.array_equal(got, bits(want)), (method, params)


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: "-".join(str(t)[6:] for t in d))
@pytest.mark.parametrize("count", [1, 3])
def test_the_ties_cut_is_the_torch_functions(count: int, dtypes: Any) -> None:
    """Task vectors of few distinct values: every cut falls among tied entries, and the ones
    torch's sort keeps are made again by the tie fix-up."""
    stored, compute, out_dtype = dtypes
    base, models = tensors(count, stored, seed=10 + count)
    for densities in ((0.5, 0.5, 0.5), (0.3, 1.0, 0.71), (0.02, 0.9, 1.0)):
        mp = [
            {"weight": w, "density": d} for w, d in zip((0.7, 1.3, -0.45), densities, strict=True)
        ]
        for params in ({}, {"normalize": False, "lambda": 0.8}):
            want = by_torch(
                "ties", models, base, mp[:count], params, dtype=compute, out_dtype=out_dtype
            )
            got = by_direct("ties", models, base, mp[:count], params, compute, out_dtype)
            assert got is not None
            assert np.array_equal(got, bits(want)), (densities, params)


def test_a_cut_the_replay_cannot_make_is_left_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    base, models = tensors(2, torch.bfloat16, seed=4)
    mp = [{"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}]
    assert by_direct("ties", models, base, mp, {}, torch.bfloat16, torch.bfloat16) is not None
    monkeypatch.setattr(sort_replay, "depth_limit", lambda n: 1)  # where libstdc++ heap-sorts
    assert by_direct("ties", models, base, mp, {}, torch.bfloat16, torch.bfloat16) is None
    monkeypatch.undo()
    monkeypatch.setattr(replay_trust, "replay_trusted", lambda: False)  # another torch's sort
    assert by_direct("ties", models, base, mp, {}, torch.bfloat16, torch.bfloat16) is None
    monkeypatch.undo()
    models[0][5] = float("inf")  # an infinite input: a result not finite
    assert by_direct("ties", models, base, mp, {}, torch.bfloat16, torch.bfloat16) is None


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: "-".join(str(t)[6:] for t in d))
def test_linear_is_the_torch_function_with_adversarial_weights(dtypes: Any) -> None:
    """The divisor is the weights' float32 sum in torch's order: in order, up to 4 weights."""
    stored, compute, out_dtype = dtypes
    _, models = tensors(4, stored, seed=9)
    rng = random.Random(0)
    choices = [1e8, -1e8, 1.0, -1.0, 3e-8, 0.1, 0.7, 1 / 3]
    for trial in range(12):
        count = 1 + trial % 4
        mp = [{"weight": rng.choice(choices)} for _ in range(count)]
        for params in ({}, {"normalize": False}):
            want = by_torch(
                "linear", models[:count], None, mp, params, dtype=compute, out_dtype=out_dtype
            )
            got = by_direct("linear", models[:count], None, mp, params, compute, out_dtype)
            if not torch.isfinite(want).all():
                assert got is None  # left to torch
                continue
            assert got is not None and np.array_equal(got, bits(want)), (mp, params)


def test_the_divisor_is_torchs_sum_for_up_to_4_weights() -> None:
    rng = random.Random(1)
    values = [1e8, -1e8, 1.0, -1.0, 3e-8, 0.1, 0.7]
    for _ in range(3000):
        weights = [rng.choice([*values, rng.uniform(-1e7, 1e7)]) for _ in range(rng.randint(1, 4))]
        merge = direct._linear([{"weight": w} for w in weights], {}, np.empty(0, np.int32))
        assert merge is not None
        assert float(merge.divisor) == float(torch.tensor(weights, dtype=torch.float32).sum())


def test_weights_round_as_torch_tensor_rounds_them() -> None:
    rng = random.Random(2)
    near = float(np.float32(1) + np.float32(2**-8))  # a bf16 halfway point, nudged below
    for i in range(20000):
        value = rng.uniform(-4, 4) if i % 2 else near + rng.choice([1, -1]) * 2.0**-30
        for dtype in (torch.bfloat16, torch.float32):
            want = float(torch.tensor(value, dtype=dtype).float())
            assert float(direct._rounded(value, str(dtype)[6:])) == want, value


def test_a_result_not_finite_is_left_to_torch() -> None:
    base, models = tensors(2, torch.bfloat16, seed=3)
    models[1][17] = float("nan")
    mp = [{"weight": 1.0}, {"weight": 1.0}]
    assert by_direct("ties", models, base, mp, {}, torch.bfloat16, torch.bfloat16) is None
    cut = [{"weight": 1.0, "density": 0.5}] * 2
    assert by_direct("ties", models, base, cut, {}, torch.bfloat16, torch.bfloat16) is None
    assert by_direct("linear", models, None, mp, {}, torch.bfloat16, torch.bfloat16) is None


def plan(method: str = "ties", count: int = 2, stored: str = "BF16", **kw: Any) -> Any:
    mp, params = kw.pop("mp", [{"weight": 1.0, "density": 1.0}] * count), kw.pop("params", {})
    args = {"base_stored": stored, "compute_dtype": "bfloat16", "out_dtype": "bfloat16", **kw}
    return direct.plan(method, mp, params, stored=[stored] * count, **args)


def test_what_it_leaves_to_torch() -> None:
    assert plan() is not None and plan("linear", base_stored=None) is not None
    cut = [{"weight": 1.0, "density": 0.5}, {"weight": 1.0}]
    assert plan(mp=cut) is not None  # the TIES cut, replayed on the task vectors' bits
    assert plan(mp=cut, params={"rescale": True}) is None  # the rescaled cut: torch's
    for method in ("dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della"):
        assert plan(method, mp=cut) is None, method  # random drops, the outlier cut
    assert plan(mp=[{"weight": 1.0, "density": 0.0}] * 2) is None
    assert plan("task_arithmetic", mp=[{"weight": 1.0, "density": 0.5}]) is not None
    assert plan(stored="F16") is None and plan(compute_dtype="float16") is None
    assert plan(out_dtype="float64") is None and plan(base_stored="F16") is None
    assert plan(stored="F32", count=5, compute_dtype="float32") is None
    assert plan(stored="F32", count=4, compute_dtype="float32") is not None
    assert plan("linear", count=5, base_stored=None) is None  # normalized: torch's sum order
    assert plan("linear", count=5, base_stored=None, params={"normalize": False}) is not None
    assert plan("slerp", count=1) is None and plan("ties", count=17) is None
    mixed = direct.plan(
        "ties",
        [{"weight": 1.0}] * 2,
        {},
        stored=["BF16", "F32"],
        base_stored="BF16",
        compute_dtype="bfloat16",
        out_dtype="bfloat16",
    )
    assert mixed is None


def test_with_the_kernels_off_nothing_runs_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "KERNELS", False)
    assert plan() is None


@pytest.mark.parametrize("method", FAMILY)
def test_the_family_flags_are_the_functions(method: str) -> None:
    family = METHODS[method].load().family
    assert (method in direct.SIGN_ELECTING) == family.elect_sign
    assert (method == direct._NEVER_SPARSIFIES) == (family.sparsifier is None)
    assert METHODS[method].global_params["normalize"].default == family.normalize
    assert METHODS[method].global_params["rescale"].default == family.rescale
    assert (method == direct._CUT_BY_MAGNITUDE) == (family.sparsifier == "top")
