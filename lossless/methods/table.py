"""The merge-method table: user-facing name → what the method needs and where its math lives.

This module imports no torch, so `lossless validate` can check a recipe's method, model count,
base model and parameters without loading anything heavy. The math is loaded on demand by
`MethodSpec.load()` from the `impl` string ("module:function").

Every implementation has the same signature (see `MergeFunction`):
    fn(tensors, base, model_params, params, *, generator) -> Tensor
- `tensors`: one tensor per input model, in recipe order, *without* the base model when the
  method takes a base (`base != "unused"`); with it otherwise.
- `base`: the base model's tensor, or None.
- `model_params`: per input model (same order as `tensors`), its resolved scalar parameters.
- `params`: the method's global parameters, resolved to scalars for this tensor.
- `generator`: a seeded torch.Generator for randomised methods (None otherwise).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

BaseUse = Literal["required", "optional", "unused"]


@dataclass(frozen=True)
class ParamSpec:
    """A method parameter: its default (None = required), range and kind."""

    default: float | bool | int | None = None
    kind: Literal["float", "bool", "int"] = "float"
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # density is in (0, 1]: 0 itself is not allowed

    @property
    def required(self) -> bool:
        return self.default is None

    def describe_range(self) -> str:
        low = "(" if self.exclusive_minimum else "["
        lo = "-inf" if self.minimum is None else f"{self.minimum:g}"
        hi = "inf" if self.maximum is None else f"{self.maximum:g}"
        return f"{low}{lo}, {hi}]"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    impl: str  # "module:function", imported lazily
    summary: str
    base: BaseUse = "unused"
    min_models: int = 1  # counted without the base model
    max_models: int | None = None
    model_params: dict[str, ParamSpec] = field(default_factory=dict)
    global_params: dict[str, ParamSpec] = field(default_factory=dict)
    randomised: bool = False

    def load(self) -> Callable[..., Any]:
        module_name, _, function_name = self.impl.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, function_name)


def _register(*specs: MethodSpec) -> dict[str, MethodSpec]:
    table: dict[str, MethodSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"merge method {spec.name!r} registered twice")
        table[spec.name] = spec
    return table


_M = "lossless.methods"
WEIGHT = ParamSpec()  # required float
DENSITY = ParamSpec(default=1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True)
UNIT = ParamSpec(minimum=0.0, maximum=1.0)  # required, in [0, 1]
LAMBDA = ParamSpec(default=1.0)
FLAG_FALSE = ParamSpec(default=False, kind="bool")
FLAG_TRUE = ParamSpec(default=True, kind="bool")

METHODS: dict[str, MethodSpec] = _register(
    MethodSpec(
        "linear",
        f"{_M}.linear:linear",
        "weighted average of the models",
        model_params={"weight": WEIGHT},
        global_params={"normalize": FLAG_TRUE},
    ),
    MethodSpec(
        "slerp",
        f"{_M}.slerp:slerp",
        "spherical interpolation between the base (t=0) and one other model (t=1)",
        base="required",
        min_models=1,
        max_models=1,
        global_params={"t": UNIT},
    ),
    MethodSpec(
        "nuslerp",
        f"{_M}.slerp:nuslerp",
        "slerp with per-model weights, optionally of task vectors against a base",
        base="optional",
        min_models=2,
        max_models=2,
        model_params={"weight": WEIGHT},
        global_params={"nuslerp_flatten": FLAG_TRUE, "nuslerp_row_wise": FLAG_FALSE},
    ),
    MethodSpec(
        "task_arithmetic",
        f"{_M}.task_arithmetic:task_arithmetic",
        "base + weighted sum of task vectors",
        base="required",
        model_params={"weight": WEIGHT},
        global_params={"normalize": FLAG_FALSE, "lambda": LAMBDA},
    ),
    MethodSpec(
        "ties",
        f"{_M}.task_arithmetic:ties",
        "task vectors trimmed to top-k magnitude, sign election, disjoint mean",
        base="required",
        model_params={"weight": WEIGHT, "density": DENSITY},
        global_params={"normalize": FLAG_TRUE, "int8_mask": FLAG_FALSE, "lambda": LAMBDA},
    ),
    MethodSpec(
        "dare_ties",
        f"{_M}.task_arithmetic:dare_ties",
        "task vectors randomly dropped and rescaled (DARE), then TIES sign election",
        base="required",
        model_params={"weight": WEIGHT, "density": DENSITY},
        global_params={
            "normalize": FLAG_TRUE,
            "int8_mask": FLAG_FALSE,
            "lambda": LAMBDA,
            "rescale": FLAG_TRUE,
        },
        randomised=True,
    ),
    MethodSpec(
        "dare_linear",
        f"{_M}.task_arithmetic:dare_linear",
        "task vectors randomly dropped and rescaled (DARE), summed without sign election",
        base="required",
        model_params={"weight": WEIGHT, "density": DENSITY},
        global_params={
            "normalize": FLAG_FALSE,
            "int8_mask": FLAG_FALSE,
            "lambda": LAMBDA,
            "rescale": FLAG_TRUE,
        },
        randomised=True,
    ),
    MethodSpec(
        "breadcrumbs",
        f"{_M}.task_arithmetic:breadcrumbs",
        "task vectors with the largest and smallest magnitudes cut, summed",
        base="required",
        model_params={
            "weight": WEIGHT,
            "density": DENSITY,
            "gamma": ParamSpec(default=0.01, minimum=0.0, maximum=1.0),
        },
        global_params={"normalize": FLAG_FALSE, "int8_mask": FLAG_FALSE, "lambda": LAMBDA},
    ),
    MethodSpec(
        "breadcrumbs_ties",
        f"{_M}.task_arithmetic:breadcrumbs_ties",
        "breadcrumbs outlier cut followed by TIES sign election",
        base="required",
        model_params={
            "weight": WEIGHT,
            "density": DENSITY,
            "gamma": ParamSpec(default=0.01, minimum=0.0, maximum=1.0),
        },
        global_params={"normalize": FLAG_TRUE, "int8_mask": FLAG_FALSE, "lambda": LAMBDA},
    ),
    MethodSpec(
        "della",
        f"{_M}.task_arithmetic:della",
        "magnitude-ranked random drop (DELLA), rescale, TIES sign election",
        base="required",
        model_params={
            "weight": WEIGHT,
            "density": DENSITY,
            "epsilon": ParamSpec(default=0.0, minimum=0.0, maximum=1.0),
        },
        global_params={
            "normalize": FLAG_TRUE,
            "int8_mask": FLAG_FALSE,
            "lambda": LAMBDA,
            "rescale": FLAG_TRUE,
        },
        randomised=True,
    ),
    MethodSpec(
        "della_linear",
        f"{_M}.task_arithmetic:della_linear",
        "magnitude-ranked random drop (DELLA), rescale, summed without sign election",
        base="required",
        model_params={
            "weight": WEIGHT,
            "density": DENSITY,
            "epsilon": ParamSpec(default=0.0, minimum=0.0, maximum=1.0),
        },
        global_params={
            "normalize": FLAG_FALSE,
            "int8_mask": FLAG_FALSE,
            "lambda": LAMBDA,
            "rescale": FLAG_TRUE,
        },
        randomised=True,
    ),
    MethodSpec(
        "passthrough",
        f"{_M}.passthrough:passthrough",
        "copies the one input tensor, optionally multiplied by `scale`",
        min_models=1,
        max_models=1,
        model_params={"scale": ParamSpec(default=1.0)},
    ),
    MethodSpec(
        "model_stock",
        f"{_M}.model_stock:model_stock",
        "interpolates the average of fine-tunes towards the base by their angle",
        base="required",
        min_models=2,
        global_params={"filter_wise": FLAG_FALSE},
    ),
    MethodSpec(
        "multislerp",
        f"{_M}.multislerp:multislerp",
        "spherical interpolation of several models on the hypersphere",
        base="optional",
        min_models=2,
        model_params={"weight": WEIGHT},
        global_params={"normalize_weights": FLAG_TRUE, "eps": ParamSpec(default=1e-8, minimum=0.0)},
    ),
    MethodSpec(
        "karcher",
        f"{_M}.karcher:karcher",
        "Riemannian (Karcher) mean of the models",
        min_models=1,
        global_params={
            "max_iter": ParamSpec(default=10, kind="int", minimum=1),
            "tol": ParamSpec(default=1e-5, minimum=0.0),
        },
    ),
    MethodSpec(
        "sce",
        f"{_M}.sce:sce",
        "select high-variance task-vector entries, calculate weights, erase minority signs",
        base="required",
        model_params={"weight": ParamSpec(default=1.0)},
        global_params={
            "select_topk": ParamSpec(default=1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True),
            "int8_mask": FLAG_FALSE,
        },
    ),
    MethodSpec(
        "nearswap",
        f"{_M}.nearswap:nearswap",
        "takes the other model's values where they are near the base's",
        base="required",
        min_models=1,
        max_models=1,
        global_params={"t": ParamSpec(minimum=0.0, exclusive_minimum=True)},
    ),
    MethodSpec(
        "arcee_fusion",
        f"{_M}.arcee_fusion:arcee_fusion",
        "fuses only the most important changes of the other model into the base",
        base="required",
        min_models=1,
        max_models=1,
    ),
    MethodSpec(
        "ram",
        f"{_M}.ram:ram",
        "reinforced agent merging: averages only where models overlap",
        base="required",
        min_models=1,
        global_params={"epsilon": ParamSpec(default=1e-5, minimum=0.0)},
    ),
    MethodSpec(
        "ramplus_tl",
        f"{_M}.ram:ramplus_tl",
        "RAM+ with overlap-aware rescaling",
        base="required",
        min_models=1,
        global_params={
            "epsilon": ParamSpec(default=1e-5, minimum=0.0),
            "r": ParamSpec(default=0.1, minimum=0.0),
            "alpha": ParamSpec(default=0.2, minimum=0.0),
        },
    ),
)
