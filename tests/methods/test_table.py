"""The method table: every entry loads, has the contract signature, and matches mergekit."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lossless.methods.table import METHODS
from tests.methods.helpers import merge
from tests.methods.make_golden import CASES, inputs

GOLDEN = json.loads(Path(__file__).with_name("mergekit_golden.json").read_text())["results"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_impl_loads_with_contract_signature(name: str) -> None:
    fn = METHODS[name].load()
    parameters = inspect.signature(fn).parameters
    positional = [p.name for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["tensors", "base", "model_params", "params"]
    generator = parameters["generator"]
    assert generator.kind is generator.KEYWORD_ONLY
    assert generator.default is None


def test_table_import_does_not_load_torch() -> None:
    code = "import sys, lossless.methods.table; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mergekit_defaults_that_differ_between_family_members() -> None:
    normalize = {
        n: METHODS[n].global_params["normalize"].default
        for n in METHODS
        if "rescale" in METHODS[n].global_params
    }
    assert normalize == {
        "task_arithmetic": False,
        "ties": True,
        "dare_ties": False,
        "dare_linear": False,
        "breadcrumbs": False,
        "breadcrumbs_ties": False,
        "della": True,
        "della_linear": False,
    }
    assert METHODS["della"].model_params["epsilon"].default == 0.15
    assert "weight" not in METHODS["sce"].model_params
    assert "weight" not in METHODS["karcher"].model_params
    assert {n for n, s in METHODS.items() if s.randomised} == {
        "dare_ties",
        "dare_linear",
        "della",
        "della_linear",
        "arcee_fusion",
    }


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_equals_mergekit_golden(case: str) -> None:
    """Outputs recorded from mergekit 0.1.5 itself (make_golden.py) on fixed 3×4 inputs."""
    _, method, count, with_base, per_model, shared, seed = next(c for c in CASES if c[0] == case)
    base, models = inputs()
    got = merge(method, models[:count], base if with_base else None, per_model, shared, seed)
    expected = torch.tensor(GOLDEN[case])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.equal(got, base)  # every case moves away from the base


@pytest.mark.parametrize("name", sorted(METHODS))
def test_merging_a_model_with_itself_is_identity(name: str) -> None:
    spec = METHODS[name]
    x = torch.tensor([[0.5, -1.0, 2.0], [0.25, 3.0, -0.75]])
    count = spec.max_models or max(spec.min_models, 2)  # 2 where the method allows it
    model_params = [{"weight": 1.0} if "weight" in spec.model_params else {}] * count
    params = {"t": 0.5} if name == "slerp" else {"t": 0.1} if name == "nearswap" else {}
    base = x.clone() if spec.base != "unused" else None
    got = merge(name, [x.clone() for _ in range(count)], base, model_params, params, seed=0)
    torch.testing.assert_close(got, x)
