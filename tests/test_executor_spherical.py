"""karcher and multislerp under a tiny memory budget: streamed in row blocks, the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lossless.merge.executor import execute
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.tensors.checkpoint import Checkpoint
from tests.factories import make_model
from tests.test_executor import hashes

# 128 columns: 512 rows make a 64K block, so the 1024-row embeddings stream in several blocks
SHAPE = {"hidden_size": 128, "vocab_size": 1024}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checkpoint]:
    root = tmp_path_factory.mktemp("spherical")
    dtypes = {"base": "float32", "a": "bfloat16", "b": "float32", "c": "bfloat16"}
    return {
        key: Checkpoint(make_model(root / key, seed=i, dtype=dtype, tokenizer=False, **SHAPE))
        for i, (key, dtype) in enumerate(dtypes.items())
    }


def _plan(srcs: dict[str, Checkpoint], method: str) -> MergePlan:
    with_base = method == "multislerp"
    models = ("a", "b", "c") if with_base else ("base", "a", "b", "c")
    model_params = (
        tuple({"weight": w} for w in (0.2, 0.5, 0.3)) if with_base else ({},) * len(models)
    )
    names = srcs["base"].tensor_names()
    jobs = tuple(
        TensorJob(
            output=name,
            method=method,
            sources=tuple(TensorRef(m, name) for m in models),
            base=TensorRef("base", name) if with_base else None,
            model_params=model_params,
            shape=srcs["base"].shape(name),
            out_dtype="bfloat16",
        )
        for name in names
    )
    return MergePlan(jobs=jobs, config_source="base")


@pytest.mark.parametrize("method", ["karcher", "multislerp"])
def test_a_tiny_budget_streams_karcher_and_multislerp_with_the_same_bytes(
    checkpoints: dict[str, Checkpoint], tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lossless.methods import streamed

    plan = _plan(checkpoints, method)
    execute(plan, checkpoints, tmp_path / "whole", shard_size=10**9, quiet=True)
    calls: list[tuple[int, int]] = []
    original = streamed.stream

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append((args[1].shape[0], kwargs["block_rows"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(streamed, "stream", counted)
    execute(plan, checkpoints, tmp_path / "rows", shard_size=10**9, quiet=True, memory=16 << 10)
    assert len(calls) == sum(len(j.shape) == 2 for j in plan.jobs)  # every matrix streamed
    assert (1024, 512) in calls  # the embeddings and lm_head in two blocks
    assert hashes(tmp_path / "whole") == hashes(tmp_path / "rows")
