"""Compare lossless's tensor plan with mergekit 0.1.5's planner on tiny checkpoints (not a test).

For each config: same output tensors? same (model, tensor) inputs, same base, same resolved
parameters? mergekit is never a dependency; run this from a throwaway virtualenv that has it:

    python -m venv /tmp/mk && echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/mk/lib/python3.11/site-packages/main.pth
    /tmp/mk/bin/pip install --no-deps mergekit==0.1.5 immutables accelerate scipy sentencepiece
    /tmp/mk/bin/python benchmarks/plan_vs_mergekit.py [MODELS_DIR]

Expected differences (by design, see lossless/merge/planner.py): output order (checkpoint order
here, mergekit's architecture JSON order there); no lm_head when the output config ties it;
base-less methods (linear) report no `base` while mergekit labels the appended base.
"""

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mergekit.architecture import get_architecture_info
from mergekit.config import MergeConfiguration
from mergekit.io.tasks import LoaderCache
from mergekit.merge import _model_out_config
from mergekit.options import MergeOptions
from mergekit.plan import MergePlanner

from lossless.merge.planner import build_plan
from lossless.recipe.model import InputModel, MergeStep, ModelRef, Slice
from tests.factories import make_model
from tests.test_plan import CheckpointHeader

root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lossless-plan-vs-mergekit")
M: dict[str, str] = {}
Rows = dict[str, tuple[Any, list[tuple[str, str]], dict[str, Any], dict[str, Any]]]


def model(name: str, **kw: Any) -> str:
    """A tiny saved checkpoint (reused across runs)."""
    p = root / name
    if not (p / "config.json").exists():
        make_model(p, tokenizer=False, **kw)
    M[name] = str(p)
    return str(p)


model("a", family="llama", layers=3, seed=1)
model("b", family="llama", layers=3, seed=2)
model("base", family="llama", layers=3, seed=3)
model("qa", family="qwen2", layers=2, seed=4, tie_word_embeddings=True)
model("qb", family="qwen2", layers=2, seed=5, tie_word_embeddings=True)
model("ta", family="llama", layers=3, seed=6, tie_word_embeddings=True)


def mk_plan(cfg: dict[str, Any]) -> tuple[Rows, int]:
    """mergekit's planned tensors: output → (base, [(model, tensor)], params, model params)."""
    conf = MergeConfiguration.model_validate(cfg)
    opts = MergeOptions()
    arch = get_architecture_info(conf, opts)
    LoaderCache().setup(options=opts)
    out = _model_out_config(conf, arch)
    rows: Rows = {}
    planner = MergePlanner(conf, arch, opts, out)
    planner._plan()
    for weight, task in planner._tensors:
        g = task.gather_tensors
        wi = g.weight_info if hasattr(g, "weight_info") else g.gather_tensors.weight_info
        base = str(task.base_model.model.path) if task.base_model else None
        srcs = []
        for m, w in wi.items():
            # resolve the name the loader will use (tied fallback)
            idx = LoaderCache().get(m).index.tensor_paths
            name = next(
                (n for n in [w.name, *(w.aliases or ()), *(w.tied_names or ())] if n in idx), w.name
            )
            srcs.append((str(m.model.path), name))
        params = {k: v for k, v in task.parameters.items()}
        mparams = {str(m.model.path): dict(v.items()) for m, v in task.input_parameters.items()}
        rows[weight.name] = (base, srcs, params, mparams)
    return rows, out.num_hidden_layers


def ours(cfg: dict[str, Any]) -> tuple[Rows, int | None]:
    """The same rows from lossless.merge.planner.build_plan."""

    def ref(x: str) -> ModelRef:
        return ModelRef.parse(x)

    def imodel(d: dict[str, Any]) -> InputModel:
        return InputModel(
            ref(d["model"]),
            d.get("parameters") or {},
            tuple(d["layer_range"]) if "layer_range" in d else None,
        )

    step = MergeStep(
        name="m",
        merge_method=cfg["merge_method"],
        models=tuple(imodel(d) for d in cfg.get("models", [])),
        slices=tuple(
            Slice(
                tuple(imodel(s) for s in sl["sources"]),
                sl.get("parameters") or {},
                ref(sl["base_model"]) if sl.get("base_model") else None,
            )
            for sl in cfg.get("slices", [])
        ),
        base_model=ref(cfg["base_model"]) if cfg.get("base_model") else None,
        parameters=cfg.get("parameters") or {},
        dtype=cfg.get("dtype"),
        out_dtype=cfg.get("out_dtype"),
    )
    srcs = {p: CheckpointHeader(Path(p), p) for p in M.values()}
    plan = build_plan(step, srcs)
    rows: Rows = {}
    for j in plan.jobs:
        srcl = ([(j.base.model, j.base.tensor)] if j.base else []) + [
            (r.model, r.tensor) for r in j.sources
        ]
        rows[j.output] = (
            j.base.model if j.base else None,
            srcl,
            dict(j.params),
            {r.model: dict(p) for r, p in zip(j.sources, j.model_params, strict=True)},
        )
    return rows, plan.config_updates.get("num_hidden_layers")


def compare(title: str, cfg: dict[str, Any]) -> None:
    """Print OK or the first differences between the two plans of `cfg`."""
    a, na = mk_plan(cfg)
    b, nb = ours(cfg)
    problems: list[str] = []
    if sorted(a) != sorted(b):
        problems.append(
            f"outputs differ: only mergekit {sorted(set(a) - set(b))[:4]}, only ours {sorted(set(b) - set(a))[:4]}; order same={sorted(a) == sorted(b)}"
        )
    if na != nb:
        problems.append(f"layers {na} vs {nb}")
    for k in a:
        if k not in b:
            continue
        (ba, sa, pa, ma), (bb, sb, pb, mb) = a[k], b[k]
        if ba != bb:
            problems.append(f"{k} base {ba} vs {bb}")
        if sorted(sa) != sorted(sb):
            problems.append(f"{k} sources {sa} vs {sb}")
        for n, v in pa.items():
            if n in pb and v is not None and abs(float(pb[n]) - float(v)) > 1e-9:
                problems.append(f"{k} param {n} {v} vs {pb[n]}")
        for m, ps in ma.items():
            if m == ba:
                continue
            for n, v in ps.items():
                if n in mb.get(m, {}) and v is not None and abs(float(mb[m][n]) - float(v)) > 1e-9:
                    problems.append(f"{k} {Path(m).name}.{n} {v} vs {mb[m][n]}")
    print(f"{title}: {len(a)} tensors, {'OK' if not problems else 'DIFF'}")
    for p in problems[:8]:
        print("   ", p)


A, B, BASE, QA, QB, TA = (M[k] for k in ("a", "b", "base", "qa", "qb", "ta"))
compare(
    "linear gradient+filters",
    {
        "merge_method": "linear",
        "models": [
            {"model": A, "parameters": {"weight": [0, 0.5, 1]}},
            {
                "model": B,
                "parameters": {
                    "weight": [
                        {"filter": "self_attn", "value": [1, 0]},
                        {"filter": "mlp", "value": 0.3},
                    ]
                },
            },
        ],
        "parameters": {"weight": 0.7},
    },
)
compare(
    "ties base appended",
    {
        "merge_method": "ties",
        "base_model": BASE,
        "models": [
            {"model": A, "parameters": {"weight": 1, "density": [0.2, 0.8]}},
            {"model": B, "parameters": {"weight": 0.5}},
        ],
        "parameters": {"density": 0.5, "lambda": [1, 2], "normalize": False},
    },
)
compare(
    "slices per-slice base",
    {
        "merge_method": "task_arithmetic",
        "base_model": BASE,
        "slices": [
            {
                "sources": [
                    {"model": BASE, "layer_range": [0, 2]},
                    {"model": A, "layer_range": [0, 2], "parameters": {"weight": [0, 1]}},
                ]
            },
            {
                "sources": [
                    {"model": A, "layer_range": [1, 3]},
                    {"model": B, "layer_range": [1, 3]},
                ],
                "base_model": A,
                "parameters": {"weight": 0.25, "lambda": [0.5, 1.5]},
            },
        ],
    },
)
compare(
    "frankenmerge passthrough",
    {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": A, "layer_range": [0, 2]}]},
            {"sources": [{"model": B, "layer_range": [1, 3]}]},
            {"sources": [{"model": A, "layer_range": [2, 3]}], "parameters": {"scale": [0.5, 0.1]}},
        ],
    },
)
compare(
    "qwen2 tied linear",
    {
        "merge_method": "linear",
        "models": [
            {"model": QA, "parameters": {"weight": 1}},
            {"model": QB, "parameters": {"weight": 2}},
        ],
    },
)
compare(
    "untied base + tied model",
    {
        "merge_method": "ties",
        "base_model": BASE,
        "models": [
            {"model": TA, "parameters": {"weight": 1}},
            {"model": A, "parameters": {"weight": 1}},
        ],
    },
)
compare(
    "tied base + untied models",
    {
        "merge_method": "ties",
        "base_model": TA,
        "models": [
            {"model": B, "parameters": {"weight": 1}},
            {"model": A, "parameters": {"weight": 1}},
        ],
    },
)
compare(
    "linear with base outside models",
    {
        "merge_method": "linear",
        "base_model": BASE,
        "models": [{"model": A, "parameters": {"weight": 0.3}}],
        "parameters": {"weight": [{"filter": "mlp", "value": 0.2}, {"value": 0.1}]},
    },
)
compare(
    "one-layer slices gradient",
    {
        "merge_method": "linear",
        "slices": [
            {
                "sources": [
                    {"model": A, "layer_range": [0, 1], "parameters": {"weight": [0.2, 0.8]}},
                    {"model": B, "layer_range": [2, 3], "parameters": {"weight": 1}},
                ]
            }
        ],
    },
)
model("a5", family="llama", layers=5, seed=7)
model("b5", family="llama", layers=5, seed=8)
compare(
    "slerp filtered gradients",
    {
        "merge_method": "slerp",
        "base_model": M["a5"],
        "slices": [
            {
                "sources": [
                    {"model": M["a5"], "layer_range": [0, 5]},
                    {"model": M["b5"], "layer_range": [0, 5]},
                ]
            }
        ],
        "parameters": {
            "t": [
                {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                {"value": 0.5},
            ]
        },
    },
)
compare(
    "slerp gradient 3 layers uneven",
    {
        "merge_method": "slerp",
        "base_model": A,
        "models": [{"model": A}, {"model": B}],
        "parameters": {"t": [0.1, 0.9, 0.2, 0.4]},
    },
)
