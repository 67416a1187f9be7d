"""`lossless run` on a merge that methods/direct.py covers never imports torch, and writes the
bytes the torch path writes; a tensor it leaves to torch still gets torch's checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lossless.methods import blocks
from tests.factories import make_model, read_tensors

pytestmark = pytest.mark.skipif(not blocks.KERNELS, reason="numba is absent, or LOSSLESS_FUSED=0")

CHILD = """
import json, sys
from lossless.cli import main
code = main(sys.argv[1:])
linalg = "scipy.linalg" in sys.modules  # numba's BLAS probe (methods/jit.py) answered without it
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "scipy_linalg": linalg}))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bf16-models")
    for i, name in enumerate(("base", "a", "b")):
        make_model(root / name, seed=i, dtype="bfloat16", tokenizer=False)
    return root


def merge(config: str, out: Path, fused: bool = True, *args: str) -> dict[str, object]:
    recipe = out.parent / f"{out.name}.yml"
    recipe.write_text(config)
    # a cache of this test's own: whether the replay's self-check is remembered is up to it
    cache = out.parent / "cache"
    env = {**os.environ, "LOSSLESS_FUSED": "1" if fused else "0", "LOSSLESS_CACHE": str(cache)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            "run",
            "-q",
            "--no-copy-tokenizer",
            str(recipe),
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {**report, "stderr": done.stderr}


LINEAR = """
models:
  - {{model: {root}/a, parameters: {{weight: 0.7}}}}
  - {{model: {root}/b, parameters: {{weight: 0.45}}}}
merge_method: linear
dtype: bfloat16
"""
TIES = """
models:
  - {{model: {root}/a, parameters: {{weight: 1.0, density: 1.0}}}}
  - {{model: {root}/b, parameters: {{weight: 0.6, density: 1.0}}}}
merge_method: ties
base_model: {root}/base
parameters: {{normalize: true, int8_mask: true, lambda: 0.9}}
dtype: bfloat16
"""


TIES_CUT = """
models:
  - {{model: {root}/a, parameters: {{weight: 0.5, density: 0.5}}}}
  - {{model: {root}/b, parameters: {{weight: 0.5, density: 0.3}}}}
merge_method: ties
base_model: {root}/base
parameters: {{normalize: true}}
dtype: bfloat16
"""


@pytest.mark.parametrize("config", [LINEAR, TIES, TIES_CUT], ids=["linear", "ties", "ties-cut"])
def test_no_torch_and_the_torch_paths_bytes(config: str, models: Path, tmp_path: Path) -> None:
    text = config.format(root=models)
    if config is TIES_CUT:  # the replay's self-check, remembered (methods/replay_trust.py)
        first = merge(text, tmp_path / "first")
        assert first["code"] == 0 and first["torch"] is True, first["stderr"]
    direct = merge(text, tmp_path / "direct")
    assert direct["code"] == 0, direct["stderr"]
    assert direct["torch"] is False
    assert direct["scipy_linalg"] is False
    by_torch = merge(text, tmp_path / "torch", fused=False)
    assert by_torch["code"] == 0 and by_torch["torch"] is True, by_torch["stderr"]
    got, want = read_tensors(tmp_path / "direct"), read_tensors(tmp_path / "torch")
    assert sorted(got) == sorted(want) and len(got) > 10
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype == torch.bfloat16
        assert got[name].view(torch.int16).equal(tensor.view(torch.int16)), name


def test_a_nan_input_is_named_as_before(models: Path, tmp_path: Path) -> None:
    """The kernel only sees a result that is not finite; the torch path then reads the
    inputs with their checks, and says which tensor holds the NaN."""
    broken = tmp_path / "broken"
    make_model(broken, seed=5, dtype="bfloat16", tokenizer=False)
    file = broken / "model.safetensors"
    tensors = load_file(file)
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name][3, 4] = float("nan")
    save_file(tensors, file, metadata={"format": "pt"})
    text = LINEAR.format(root=models).replace(f"{models}/b", str(broken))
    report = merge(text, tmp_path / "out")
    assert report["code"] == 1
    assert f"tensor {name!r}" in str(report["stderr"]) and "1 NaN" in str(report["stderr"])
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models whose embeddings and lm_head (4096 × 32) a 1M budget streams by row blocks."""
    root = tmp_path_factory.mktemp("wide-models")
    for i, name in enumerate(("base", "a", "b")):
        make_model(root / name, seed=i, dtype="bfloat16", tokenizer=False, vocab_size=4096)
    return root


@pytest.mark.parametrize("config", [LINEAR, TIES], ids=["linear", "ties"])
def test_streamed_tensors_merge_by_blocks_without_torch(
    config: str, wide: Path, tmp_path: Path
) -> None:
    """An entrywise merge of tensors too large for the budget runs a block of rows at a
    time on the fused kernels (torch never imported), with the bytes of the whole-tensor
    kernels and of torch's own streamed path."""
    text = config.format(root=wide)
    blocks = merge(text, tmp_path / "blocks", True, "--memory", "1M")
    assert blocks["code"] == 0 and blocks["torch"] is False, blocks["stderr"]
    whole = merge(text, tmp_path / "whole")
    assert whole["code"] == 0, whole["stderr"]
    by_torch = merge(text, tmp_path / "torch", False, "--memory", "1M")
    assert by_torch["code"] == 0 and by_torch["torch"] is True, by_torch["stderr"]
    got = read_tensors(tmp_path / "blocks")
    assert got["model.embed_tokens.weight"].shape == (4096, 32)
    for other in ("whole", "torch"):
        want = read_tensors(tmp_path / other)
        assert sorted(got) == sorted(want)
        for name, tensor in want.items():
            assert got[name].view(torch.int16).equal(tensor.view(torch.int16)), (other, name)


def test_a_streamed_block_that_overflows_is_merged_by_torch(wide: Path, tmp_path: Path) -> None:
    """A block whose kernel result is not finite (finite inputs whose weighted sum overflows)
    is computed by torch for those rows alone: the output holds torch's infinity there, and
    every byte is the torch path's."""
    large = tmp_path / "large"
    make_model(large, seed=1, dtype="bfloat16", tokenizer=False, vocab_size=4096)
    file = large / "model.safetensors"
    tensors = load_file(file)
    tensors["model.embed_tokens.weight"][3000, 5] = 3.3e38  # finite in bf16; doubled, not
    save_file(tensors, file, metadata={"format": "pt"})
    text = (
        LINEAR.format(root=wide)
        .replace(f"{wide}/a", str(large))
        .replace("0.7", "2.0")
        .replace("0.45", "1.0")
    ) + "parameters: {normalize: false}\n"
    blocks = merge(text, tmp_path / "blocks", True, "--memory", "1M")
    assert blocks["code"] == 0 and blocks["torch"] is True, blocks["stderr"]
    by_torch = merge(text, tmp_path / "torch", False, "--memory", "1M")
    assert by_torch["code"] == 0, by_torch["stderr"]
    got, want = read_tensors(tmp_path / "blocks"), read_tensors(tmp_path / "torch")
    embed = got["model.embed_tokens.weight"].float()
    assert embed[3000, 5] == float("inf") and int(embed.isinf().sum()) == 1
    for name, tensor in want.items():
        assert got[name].view(torch.int16).equal(tensor.view(torch.int16)), name


def test_a_nan_in_a_streamed_tensor_is_named(wide: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    make_model(broken, seed=5, dtype="bfloat16", tokenizer=False, vocab_size=4096)
    file = broken / "model.safetensors"
    tensors = load_file(file)
    name = "model.embed_tokens.weight"
    tensors[name][3000, 4] = float("nan")  # in the second block of rows
    save_file(tensors, file, metadata={"format": "pt"})
    text = LINEAR.format(root=wide).replace(f"{wide}/b", str(broken))
    report = merge(text, tmp_path / "out", True, "--memory", "1M")
    assert report["code"] == 1
    assert f"tensor {name!r}" in str(report["stderr"]) and "1 NaN" in str(report["stderr"])
    assert not (tmp_path / "out" / "model.safetensors").exists()
