"""Row-block streaming (methods/streamed.py) gives the whole-tensor path's bits, ties included."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from lossless.methods import blocks, radix, replay_stream, streamed
from lossless.methods.table import METHODS

ROWS, COLS = 40, 4096  # 2.5 blocks of 64K entries; 16 rows = one block


class MemoryRows:
    def __init__(self, models: Sequence[torch.Tensor], base: torch.Tensor | None) -> None:
        self.models, self._base = list(models), base
        self.has_base = base is not None
        self.shape = tuple((base if base is not None else models[0]).shape)

    def model(self, i: int, lo: int, hi: int) -> torch.Tensor:
        return self.models[i][lo:hi]

    def base(self, lo: int, hi: int) -> torch.Tensor:
        assert self._base is not None
        return self._base[lo:hi]


def streamed_bf16(
    method, models, base, model_params, params, dtype, block_rows, seed=None, **kwargs
):
    """The whole tensor, streamed from `models` (and `base`) in `block_rows` blocks, in bf16;
    `kwargs` go to streamed.stream (e.g. `note`)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    parts = streamed.stream(
        method,
        MemoryRows(models, base),
        model_params,
        params,
        block_rows=block_rows,
        dtype=dtype,
        out_dtype=torch.bfloat16,
        generator=generator,
        **kwargs,
    )
    return torch.cat(list(parts))


def _levels(seed: int, levels: int) -> torch.Tensor:
    """bf16 values drawn from a few levels: most magnitudes are shared by many entries."""
    g = torch.Generator().manual_seed(seed)
    values = torch.linspace(-0.02, 0.02, levels)
    return values[torch.randint(0, levels, (ROWS, COLS), generator=g)].bfloat16()


def _smooth(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(ROWS, COLS, generator=g) * 0.02).bfloat16()


def _run(method: str, models, base, model_params, params, block_rows: int, seed: int = 5, **kwargs):
    spec = METHODS[method]
    whole_fn = spec.load()
    kwargs = {"dtype": torch.float32, "out_dtype": torch.bfloat16, **kwargs}
    g = torch.Generator().manual_seed(seed) if spec.randomised else None
    dtypes = {name: kwargs[name] for name in ("dtype", "out_dtype")}
    whole = whole_fn(models, base, model_params, params, generator=g, **dtypes)
    g = torch.Generator().manual_seed(seed) if spec.randomised else None
    blocks = list(
        streamed.stream(
            method,
            MemoryRows(models, base),
            model_params,
            params,
            block_rows=block_rows,
            generator=g,
            **kwargs,
        )
    )
    assert all(b.shape[1:] == whole.shape[1:] for b in blocks)
    return whole, torch.cat(blocks)


FAMILY = [
    ("ties", {}),
    ("dare_ties", {}),
    ("dare_linear", {}),
    ("breadcrumbs", {"gamma": 0.05}),
    ("breadcrumbs_ties", {"gamma": 0.05}),
    ("della", {"epsilon": 0.1}),
    ("della_linear", {"epsilon": 0.1}),
    ("task_arithmetic", {}),
]


@pytest.mark.parametrize(("method", "extra"), FAMILY)
@pytest.mark.parametrize("inputs", ["levels", "smooth"])
def test_streamed_family_equals_whole_tensor_bit_for_bit(method, extra, inputs) -> None:
    make = (lambda s: _levels(s, 7)) if inputs == "levels" else _smooth
    base, models = make(0), [make(1), make(2)]
    model_params = [
        {"weight": 0.7, "density": 0.5, **extra},
        {"weight": 1.3, "density": 0.3, **extra},
    ]
    for params in ({}, {"rescale": True, "normalize": True, "lambda": 0.9}):
        # 16 rows = one 64K block; 32 rows end mid-tensor (the last block is 8 rows)
        for block_rows in (16, 32):
            whole, got = _run(method, models, base, model_params, params, block_rows)
            assert torch.equal(whole, got), (method, params, block_rows)


@pytest.mark.parametrize("method", ["dare_ties", "della", "della_linear"])
def test_random_drops_keep_their_masks_when_they_fit_and_draw_again_otherwise(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, models = _smooth(0), [_smooth(1), _levels(2, 7)]
    model_params = [
        {"weight": 0.7, "density": 0.5, "epsilon": 0.1},
        {"weight": 1.3, "density": 0.3, "epsilon": 0.1},
    ]
    params = {"rescale": True}
    draws: list[int] = []
    bernoulli = torch.bernoulli

    def counted(*args, **kwargs):
        draws.append(1)
        return bernoulli(*args, **kwargs)

    monkeypatch.setattr(torch, "bernoulli", counted)
    packed = streamed.packed_mask_bytes(ROWS * COLS)  # one model's masks, 8 to a byte
    blocks = 3  # 16 + 16 + 8 rows
    # memory for both models' masks: the merge pass reuses them; a byte short: drawn again
    for memory, merge_pass_draws in (
        (2 * packed, 0),
        (2 * packed - 1, 2 * blocks),
        (0, 2 * blocks),
    ):
        draws.clear()
        whole, got = _run(method, models, base, model_params, params, 16, replay_memory=memory)
        assert torch.equal(whole, got), memory
        assert len(draws) == 2 + 2 * blocks + merge_pass_draws, memory  # 2: the whole tensor's


def test_streamed_linear_equals_whole() -> None:
    models = [_smooth(1), _smooth(2), _levels(3, 5)]
    model_params = [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}]
    whole, got = _run("linear", models, None, model_params, {"normalize": True}, 32)
    assert torch.equal(whole, got)


@pytest.mark.parametrize("kind", ["bf16 levels", "float32"])
def test_radix_select_finds_value_and_counts_at_the_cut(kind) -> None:
    """Exact value and counts; one pass over magnitudes without low bits (a bf16 task
    vector's), two over float32 ones."""
    if kind == "float32":
        mags = torch.randn(ROWS * COLS, generator=torch.Generator().manual_seed(4)).abs()
        mags[: mags.numel() // 2] = mags[mags.numel() // 2 :]  # ties too
    else:
        mags = _levels(4, 9).float().abs().reshape(-1)
    passes = []

    def blocks():
        passes.append(1)
        return iter(mags.split(70001))

    radix.kth_magnitude(blocks, 1000)
    assert len(passes) == (1 if kind == "bf16 levels" else 2)
    for k in (1, 1000, mags.numel() // 2, mags.numel()):
        rank = radix.kth_magnitude(lambda: iter(mags.split(70001)), k)
        value = torch.sort(mags, descending=True).values[k - 1]
        assert rank.value == float(value)
        assert rank.beyond == int((mags > value).sum())
        assert rank.equal == int((mags == value).sum())
        low = radix.kth_magnitude(lambda: iter(mags.split(70001)), k, largest=False)
        assert low.value == float(torch.sort(mags).values[k - 1])
        assert low.beyond == int((mags < low.value).sum())


def test_row_alignment_makes_blocks_of_whole_64k_blocks() -> None:
    assert blocks.row_alignment((128256, 8192)) == 8
    assert blocks.row_alignment((10, 3000)) == 8192  # gcd(3000, 64K) = 8
    assert blocks.row_alignment((28672, 8192)) * 8192 % (1 << 16) == 0
    assert blocks.row_alignment((5, 3)) == 1 << 16


@pytest.mark.parametrize(("method", "extra"), [("ties", {}), ("breadcrumbs_ties", {"gamma": 0.05})])
def test_tie_order_replayed_through_views_in_little_memory(method, extra, monkeypatch) -> None:
    """With room for an eighth of a task vector's keys, the cut's ties are replayed through
    streamed partitions (replay_stream.py): still the whole-tensor path's bits."""
    monkeypatch.setattr(replay_stream, "GRID", 1024)
    partitions = []
    real = replay_stream.Partition
    monkeypatch.setattr(
        replay_stream, "Partition", lambda level: partitions.append(1) or real(level)
    )
    base, models = _levels(0, 7), [_levels(1, 7), _levels(2, 7)]
    model_params = [
        {"weight": 0.7, "density": 0.5, **extra},
        {"weight": 1.3, "density": 0.3, **extra},
    ]
    memory = ROWS * COLS * 4 // 8
    whole, got = _run(method, models, base, model_params, {}, 16, replay_memory=memory)
    assert torch.equal(whole, got)
    assert len(partitions) >= 4  # at least two streamed partitions per model


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_cut_whose_bits_fit_its_memory_is_made_whole_without_the_radix_select(
    dtype, monkeypatch
) -> None:
    """A task vector whose bits and indices fit the replay's memory is gathered once and cut
    by the compiled replay (streamed_cuts._held_cut): no radix pass, still the whole-tensor
    path's bits; with room for the keys alone, the streamed cut (radix select first) decides."""
    base, models = _levels(0, 7), [_levels(1, 7), _levels(2, 7)]
    model_params = [{"weight": 0.7, "density": 0.5}, {"weight": 1.3, "density": 0.3}]
    count = ROWS * COLS
    selects = []
    real = radix.kth_magnitude
    monkeypatch.setattr(radix, "kth_magnitude", lambda *a, **k: selects.append(1) or real(*a, **k))
    held = count * (dtype.itemsize + 4)
    for memory, radix_calls in ((held, 0), (held - 1, 2)):
        selects.clear()
        whole, got = _run(
            "ties", models, base, model_params, {}, 16, dtype=dtype, replay_memory=memory
        )
        assert torch.equal(whole, got), (dtype, memory)
        assert len(selects) == radix_calls, (dtype, memory)  # one per model


VECTORS = [
    ("passthrough", 1, False, [{"scale": 0.5}], {}),
    ("nearswap", 1, True, [{}], {"t": 0.01}),
    ("ram", 3, True, [{}] * 3, {"epsilon": 0.01}),
    ("ramplus_tl", 3, True, [{}] * 3, {"epsilon": 0.01, "r": 0.5, "alpha": 0.5}),
    ("slerp", 1, True, [{}], {"t": 0.3}),
    ("nuslerp", 2, True, [{"weight": 0.3}, {"weight": 0.6}], {}),
    ("nuslerp", 2, False, [{"weight": 0.3}, {"weight": 0.6}], {"nuslerp_flatten": False}),
    ("model_stock", 3, True, [{}] * 3, {}),
    ("model_stock", 3, True, [{}] * 3, {"filter_wise": True}),
]


@pytest.mark.parametrize(("method", "count", "with_base", "model_params", "params"), VECTORS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_methods_equal_whole_tensor(method, count, with_base, model_params, params, dtype):
    base = _smooth(0) if with_base else None
    models = [_smooth(i + 1) for i in range(count)]
    fn = METHODS[method].load()
    cast = [m.to(dtype) for m in models]
    whole = fn(cast, None if base is None else base.to(dtype), model_params, params)
    whole = whole.to(torch.bfloat16)
    for block_rows in (16, 32):
        got = streamed_bf16(method, models, base, model_params, params, dtype, block_rows)
        assert torch.equal(got, whole), (method, block_rows)


def test_block_sums_do_not_depend_on_the_thread_count() -> None:
    """A budget changes the workers and so torch's threads per worker: a Gram or L1 sum must
    not change with them (torch's own sum of one 64K block does, in about a third of blocks)."""
    from lossless.methods.blocks import Gram, lane_sums
    from lossless.methods.sparsify import L1

    g = torch.Generator().manual_seed(0)
    vectors = [torch.randn(3 * (1 << 16) + 123, generator=g) * 50 for _ in range(3)]
    threads = torch.get_num_threads()
    seen = set()
    try:
        for count in (1, 2, 4):
            torch.set_num_threads(count)
            gram, l1 = Gram(3), L1()
            gram.add([v.double() for v in vectors])
            l1.add(vectors[0])
            half = lane_sums(vectors[1][: 1 << 16].bfloat16())
            seen.add((gram.total.numpy().tobytes(), float(l1.total(torch.float64)), float(half)))
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == 1
    x = vectors[2][:70000].double()
    assert float(lane_sums(x)) == pytest.approx(float(x.sum()), rel=1e-12)
