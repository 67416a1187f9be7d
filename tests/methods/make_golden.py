"""Regenerate mergekit_golden.json: mergekit 0.1.5's outputs on fixed tiny inputs.

Not part of the test run (mergekit is never a dependency). Run it in a separate venv that has
mergekit 0.1.5 and torch, from the repository root:
    /tmp/mkvenv/bin/python tests/methods/make_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Rounded to 3 decimals so the JSON is the exact float32 input everywhere.
BASE = [[0.5, -1.2, 0.3, 0.8], [-0.4, 0.9, -0.7, 0.1], [1.1, -0.2, 0.6, -0.9]]
OFFSETS = [
    [[0.3, -0.1, 0.05, -0.2], [0.1, 0.25, -0.15, 0.0], [-0.05, 0.2, 0.1, -0.3]],
    [[-0.2, -0.15, 0.1, 0.3], [0.05, -0.1, 0.2, 0.12], [0.15, -0.25, 0.02, 0.1]],
    [[0.1, 0.2, -0.3, -0.05], [-0.2, 0.15, -0.1, 0.3], [0.25, 0.05, -0.2, 0.0]],
]
W3 = [{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.8}]
WD3 = [
    {"weight": 0.5, "density": 0.5},
    {"weight": 0.3, "density": 0.7},
    {"weight": 0.8, "density": 0.4},
]

# (case name, method, number of models, with base, per-model params, global params, seed)
CASES: list[tuple[str, str, int, bool, list[dict[str, Any]], dict[str, Any], int | None]] = [
    ("linear", "linear", 3, False, W3, {}, None),
    ("slerp", "slerp", 1, True, [{}], {"t": 0.3}, None),
    ("nuslerp", "nuslerp", 2, True, W3[:2], {}, None),
    ("nuslerp_rows", "nuslerp", 2, False, W3[:2], {"nuslerp_flatten": False}, None),
    ("task_arithmetic", "task_arithmetic", 3, True, W3, {"lambda": 0.9}, None),
    ("ties", "ties", 3, True, WD3, {}, None),
    ("dare_ties", "dare_ties", 3, True, WD3, {}, 0),
    ("dare_linear", "dare_linear", 3, True, WD3, {}, 0),
    ("breadcrumbs", "breadcrumbs", 3, True, [dict(p, gamma=0.1) for p in WD3], {}, None),
    ("breadcrumbs_ties", "breadcrumbs_ties", 3, True, [dict(p, gamma=0.1) for p in WD3], {}, None),
    ("della", "della", 3, True, [dict(p, epsilon=0.1) for p in WD3], {}, 0),
    ("della_linear", "della_linear", 3, True, [dict(p, epsilon=0.1) for p in WD3], {}, 0),
    ("passthrough", "passthrough", 1, False, [{"scale": 0.5}], {}, None),
    ("model_stock", "model_stock", 3, True, [{}] * 3, {}, None),
    ("model_stock_filter_wise", "model_stock", 3, True, [{}] * 3, {"filter_wise": True}, None),
    ("multislerp", "multislerp", 3, True, W3, {}, None),
    ("karcher", "karcher", 3, False, [{}] * 3, {}, None),
    ("sce", "sce", 3, True, [{}] * 3, {"select_topk": 0.5}, None),
    ("nearswap", "nearswap", 1, True, [{}], {"t": 0.1}, None),
    ("arcee_fusion", "arcee_fusion", 1, True, [{}], {}, None),
    ("ram", "ram", 3, True, [{}] * 3, {"epsilon": 0.06}, None),
    (
        "ramplus_tl",
        "ramplus_tl",
        3,
        True,
        [{}] * 3,
        {"epsilon": 0.06, "r": 0.5, "alpha": 0.5},
        None,
    ),
]


def inputs() -> tuple[torch.Tensor, list[torch.Tensor]]:
    base = torch.tensor(BASE)
    return base, [base + torch.tensor(offset) for offset in OFFSETS]


def main() -> None:
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    base, models = inputs()
    results = {}
    for case, method, count, with_base, per_model, shared, seed in CASES:
        tensors = models[:count] + ([base] if with_base else [])
        group = TensorGroup.from_tensors(tensors, base_index=count if with_base else None)
        parameters = dict(shared)
        for key in per_model[0]:
            parameters[key] = [p[key] for p in per_model]
        if seed is not None:
            torch.manual_seed(seed)
        (out,) = registry.get(method)((group,), parameters=parameters)
        results[case] = out.tolist()
    path = Path(__file__).with_name("mergekit_golden.json")
    path.write_text(json.dumps({"mergekit": "0.1.5", "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
