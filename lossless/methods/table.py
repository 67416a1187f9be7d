"""The merge-method table: user-facing name → what the method needs and where its math lives.

This module imports no torch, so `lossless validate` can check a recipe's method, model count,
base model and parameters without loading anything heavy; `MethodSpec.input_problems` is the
one wording of the input rules, shared by validation and the merge planner. The math is loaded
on demand by `MethodSpec.load()` from the `impl` string ("module:function").

Every implementation has the same signature (tests/methods/test_table.py checks it):
    fn(tensors, base, model_params, params, *, generator) -> Tensor
- `tensors`: one tensor per input model, in recipe order, *without* the base model when the
  method takes a base (`base != "unused"`); with it otherwise.
- `base`: the base model's tensor, or None. Never None for `base="required"`: the input rules
  (base model, model counts) live only in `MethodSpec.input_problems`, which `lossless validate`
  and the merge planner enforce before any function is called, so the functions do not re-check.
- `model_params`: per input model (same order as `tensors`), its resolved scalar parameters.
- `params`: the method's global parameters, resolved to scalars for this tensor.
- `generator`: a seeded torch.Generator for randomised methods (None otherwise). mergekit draws
  from torch's global RNG (seeded by `--random-seed`); a Generator seeded with the same number
  and the tensors merged in the same order gives the same draws.

Facts of mergekit 0.1.5 this table and the functions follow:
- `base="unused"` (mergekit's "ignored": linear, passthrough, karcher): a `base_model` the recipe
  names is NOT special: it is one more input, appended after `models` if not listed there, with
  its own per-model parameters (linear needs a `weight` for it). Pass it inside `tensors`.
- Inputs are first cast to one dtype (the promotion of the inputs' dtypes, or the recipe's
  `dtype`); the functions take them so. Most compute in that dtype; linear and slerp compute in
  float32 (float64 stays) and return the input dtype, as do karcher and multislerp (their dot
  products and iterations in float64, on the Gram matrix of the inputs);
  arcee_fusion and ramplus_tl return float32 for half inputs. The engine casts the result to
  `out_dtype`/`dtype`.
- Randomised methods draw in input order (model 1's mask, then model 2's ...); mergekit seeds
  the global RNG once per run, so whole-model equality also needs the same tensor order.
- No method of 0.1.5 looks at the tensor's name, so there is no name argument. Vocabulary
  alignment (embeddings of different sizes) happens before the method, not inside it.
- mergekit checks no parameter ranges (slerp t=1.5 extrapolates, density 0 drops everything),
  so the ParamSpecs below carry none. della raises if density ± epsilon leaves (0, 1) while
  density < 1 (LosslessError from the function).
"""

from __future__ import annotations

from lossless.methods.spec import BaseUse, InputProblem, MethodSpec, ParamSpec

__all__ = ["METHODS", "BaseUse", "InputProblem", "MethodSpec", "ParamSpec"]


def _register(*specs: MethodSpec) -> dict[str, MethodSpec]:
    table: dict[str, MethodSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"merge method {spec.name!r} registered twice")
        table[spec.name] = spec
    return table


_M = "lossless.methods"
WEIGHT = ParamSpec()  # required float
# Ranges are lossless's own strictness (mergekit 0.1.5 checks none): a density of 1.5 or a slerp
# t of -0.2 is almost always a typo, and `lossless validate` should say so before a long merge.
DENSITY = ParamSpec(default=1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True)
UNIT = ParamSpec(minimum=0.0, maximum=1.0)  # required, in [0, 1]
LAMBDA = ParamSpec(default=1.0)
FLAG_FALSE = ParamSpec(default=False, kind="bool")
FLAG_TRUE = ParamSpec(default=True, kind="bool")


def _task_arithmetic(
    name: str,
    summary: str,
    *,
    normalize: bool,
    rescale: bool,
    extra: dict[str, ParamSpec] | None = None,
    randomised: bool = False,
) -> MethodSpec:
    """A member of the task-arithmetic family: the same parameters, different defaults."""
    return MethodSpec(
        name,
        f"{_M}.task_arithmetic:{name}",
        summary,
        base="required",
        min_models=0,  # with only the base, the result is the base
        model_params={"weight": WEIGHT, "density": DENSITY, **(extra or {})},
        global_params={
            "normalize": FLAG_TRUE if normalize else FLAG_FALSE,
            "rescale": FLAG_TRUE if rescale else FLAG_FALSE,
            "int8_mask": FLAG_FALSE,
            "lambda": LAMBDA,
        },
        randomised=randomised,
        casts_inputs=True,
        streams=True,
    )


GAMMA = {"gamma": ParamSpec(default=0.01, minimum=0.0, maximum=1.0)}
EPSILON = {"epsilon": ParamSpec(default=0.15, minimum=0.0, maximum=1.0)}

METHODS: dict[str, MethodSpec] = _register(
    MethodSpec(
        "linear",
        f"{_M}.linear:linear",
        "weighted average of the models",
        model_params={"weight": WEIGHT},
        global_params={"normalize": FLAG_TRUE},
        casts_inputs=True,
        streams=True,
    ),
    MethodSpec(
        "slerp",
        f"{_M}.slerp:slerp",
        "spherical interpolation between the base (t=0) and one other model (t=1)",
        base="required",
        min_models=1,
        max_models=1,
        global_params={"t": UNIT},
        streams=True,
    ),
    MethodSpec(
        "nuslerp",
        f"{_M}.slerp:nuslerp",
        "slerp of two models at t = w2/(w1+w2), of their task vectors if there is a base",
        base="optional",
        min_models=2,
        max_models=2,
        model_params={"weight": WEIGHT},
        global_params={"nuslerp_flatten": FLAG_TRUE, "nuslerp_row_wise": FLAG_FALSE},
        streams=True,
    ),
    _task_arithmetic(
        "task_arithmetic", "base + weighted sum of task vectors", normalize=False, rescale=False
    ),
    _task_arithmetic(
        "ties",
        "task vectors trimmed to top-k magnitude, sign election, disjoint mean",
        normalize=True,
        rescale=False,
    ),
    _task_arithmetic(
        "dare_ties",
        "task vectors randomly dropped and L1-rescaled (DARE), then TIES sign election",
        normalize=False,
        rescale=True,
        randomised=True,
    ),
    _task_arithmetic(
        "dare_linear",
        "task vectors randomly dropped and L1-rescaled (DARE), summed without sign election",
        normalize=False,
        rescale=True,
        randomised=True,
    ),
    _task_arithmetic(
        "breadcrumbs",
        "task vectors with the largest (gamma) and smallest magnitudes cut, summed",
        normalize=False,
        rescale=False,
        extra=GAMMA,
    ),
    _task_arithmetic(
        "breadcrumbs_ties",
        "breadcrumbs outlier cut followed by TIES sign election",
        normalize=False,
        rescale=False,
        extra=GAMMA,
    ),
    _task_arithmetic(
        "della",
        "magnitude-ranked random drop (DELLA), rescale, TIES sign election",
        normalize=True,
        rescale=True,
        extra=EPSILON,
        randomised=True,
    ),
    _task_arithmetic(
        "della_linear",
        "magnitude-ranked random drop (DELLA), rescale, summed without sign election",
        normalize=False,
        rescale=True,
        extra=EPSILON,
        randomised=True,
    ),
    MethodSpec(
        "passthrough",
        f"{_M}.passthrough:passthrough",
        "copies the one input tensor, optionally multiplied by `scale`",
        min_models=1,
        max_models=1,
        model_params={"scale": ParamSpec(default=1.0)},
        streams=True,
    ),
    MethodSpec(
        "model_stock",
        f"{_M}.model_stock:model_stock",
        "interpolates the average of fine-tunes towards the base by their angle",
        base="required",
        min_models=2,
        global_params={"filter_wise": FLAG_FALSE},
        streams=True,
    ),
    MethodSpec(
        "multislerp",
        f"{_M}.multislerp:multislerp",
        "spherical interpolation of several models on the hypersphere",
        base="optional",
        min_models=1,
        model_params={"weight": WEIGHT},
        global_params={"normalize_weights": FLAG_TRUE, "eps": ParamSpec(default=1e-8)},
        streams=True,
    ),
    MethodSpec(
        "karcher",
        f"{_M}.karcher:karcher",
        "Riemannian (Karcher) mean of the models, equal weights",
        min_models=1,
        global_params={
            "max_iter": ParamSpec(default=10, kind="int"),
            "tol": ParamSpec(default=1e-5),
        },
        streams=True,
    ),
    MethodSpec(
        "sce",
        f"{_M}.sce:sce",
        "select high-variance task-vector entries, calculate weights, erase minority signs",
        base="required",
        min_models=0,
        global_params={
            "select_topk": ParamSpec(default=1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True),
            "int8_mask": FLAG_FALSE,
        },
        streams=True,
    ),
    MethodSpec(
        "nearswap",
        f"{_M}.nearswap:nearswap",
        "moves the base towards the other model entry by entry, fully where within t",
        base="required",
        min_models=1,
        max_models=1,
        global_params={"t": ParamSpec(minimum=0.0, exclusive_minimum=True)},
        streams=True,
    ),
    MethodSpec(
        "arcee_fusion",
        f"{_M}.arcee_fusion:arcee_fusion",
        "fuses only the most important changes of the other model into the base",
        base="required",
        min_models=1,
        max_models=1,
        randomised=True,  # only for tensors over 1M entries (sampled quantiles)
        streams=True,
    ),
    MethodSpec(
        "ram",
        f"{_M}.ram:ram",
        "reinforced agent merging: averages task vectors only where models overlap",
        base="required",
        min_models=0,
        global_params={"epsilon": ParamSpec(default=1e-5, minimum=0.0)},
        streams=True,
    ),
    MethodSpec(
        "ramplus_tl",
        f"{_M}.ram:ramplus_tl",
        "RAM+ (tensor-local): unique entries boosted by each model's overlap",
        base="required",
        min_models=0,
        global_params={
            "epsilon": ParamSpec(default=1e-5, minimum=0.0),
            "r": ParamSpec(default=0.1),
            "alpha": ParamSpec(default=0.2),
        },
        streams=True,
    ),
)
