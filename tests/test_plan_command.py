"""`lossless plan`: freshness from the runner's records, and resolved parameters per layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.factories import make_model

RECIPE = """
slices:
  - sources:
      - model: base
        layer_range: [0, 2]
      - model: other
        layer_range: [0, 2]
merge_method: slerp
base_model: base
parameters:
  t:
    - filter: self_attn
      value: [0, 1]
    - value: 0.5
dtype: float32
"""


def lossless(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "lossless", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_plan_shows_missing_then_fresh_then_stale_and_params(tmp_path: Path) -> None:
    make_model(tmp_path / "base", seed=0)
    make_model(tmp_path / "other", seed=1)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)

    before = json.loads(lossless("plan", "r.yaml", "--format", "json", cwd=tmp_path).stdout)
    assert before["steps"][0]["state"] == "missing"

    assert lossless("run", "r.yaml", "--quiet", cwd=tmp_path).returncode == 0
    fresh = lossless("plan", "r.yaml", "--format", "json", "--params", cwd=tmp_path)
    data = json.loads(fresh.stdout)
    assert data["steps"][0]["state"] == "fresh"
    t_values = {
        (row["layer"], row["tensor"].split(".")[-2]): row["value"]
        for row in data["params"]
        if row["param"] == "t"
    }
    # gradient [0, 1] over the slice's 2 layers on attention; 0.5 elsewhere
    assert t_values[(0, "q_proj")] == 0.0
    assert t_values[(1, "q_proj")] == 1.0
    assert t_values[(1, "up_proj")] == 0.5

    recipe.write_text(RECIPE.replace("value: 0.5", "value: 0.25"))
    stale = json.loads(lossless("plan", "r.yaml", "--format", "json", cwd=tmp_path).stdout)
    assert stale["steps"][0]["state"] == "stale"
    assert "settings: changed" in stale["steps"][0]["why"]
