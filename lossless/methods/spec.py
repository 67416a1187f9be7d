"""What a merge method is, as data: its parameters (`ParamSpec`), its input rules
(`MethodSpec.input_problems`, the one wording shared by validation and the planner) and where
its math lives (`MethodSpec.load()`, imported on demand). No torch here: `lossless validate`
reads these without loading anything heavy. The table of methods is `table.py`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
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


def _models(n: int) -> str:
    return f"{n} model" if n == 1 else f"{n} models"


def _more(n: int) -> str:
    return f"{n} more model" if n == 1 else f"{n} more models"


@dataclass(frozen=True)
class InputProblem:
    """A broken input rule of a method, worded once for `lossless validate` and the merge."""

    code: str  # "model-count", "missing-base", "base-not-listed", "unused-base"
    message: str
    hint: str | None = None
    expected: str | None = None
    got: str | None = None
    severity: Literal["error", "warning"] = "error"


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
    # Takes its inputs in their stored dtype, with `dtype=` (the compute dtype) and `out_dtype=`
    # keywords, and casts block by block: no whole-model float32 copies of every input.
    casts_inputs: bool = False
    # Can run over a tensor's rows a block at a time (methods/streamed.py), with the same bits
    # (but for sce's rare case in streamed_sce.py): the executor does so for a tensor too large
    # for its memory budget.
    streams: bool = False

    def wants(self) -> str:
        """How many models the method takes besides its base: "exactly 1 model", "at least 2 models"."""
        low, high = self.min_models, self.max_models
        if high == low:
            want = f"exactly {_models(low)}"
        elif high is None:
            want = f"at least {_models(low)}"
        else:
            want = f"{low} to {_models(high)}"
        return want + (" besides the base model" if self.base != "unused" else "")

    def input_problems(self, models: Sequence[str], base: str | None) -> list[InputProblem]:
        """The method's input rules (base model, model counts) checked on one set of inputs.

        `models`: every input model in order, as the merge sees them (for `models:`, mergekit
        appends the base model when it is not listed; a slice's sources as written). `base`: the
        base model in effect, or None. The only place these rules live: `lossless validate`
        (lossless/validation/merge_rules.py) and the merge planner (lossless/merge/slices.py)
        both report what this returns, so the method functions may assume the rules hold.
        """
        problems: list[InputProblem] = []
        if self.base == "unused":
            if base is not None:
                effect = (
                    "is merged as one more input model"
                    if base in models
                    else "has no effect on the merged tensors"
                )
                problems.append(
                    InputProblem(
                        "unused-base",
                        f"{self.name} takes no base model: `base_model` {base} {effect}",
                        hint="remove `base_model:`, or list the model among the inputs",
                        severity="warning",
                    )
                )
            others = list(models)
        else:
            if base is None and self.base == "required":
                problems.append(
                    InputProblem(
                        "missing-base",
                        f"{self.name} needs a `base_model` (the model the others were "
                        "fine-tuned from); none is set",
                        hint="add `base_model: <model>` at the top level, or to every slice",
                    )
                )
            elif base is not None and base not in models:
                problems.append(
                    InputProblem(
                        "base-not-listed",
                        f"base model {base} is not one of the slice's sources",
                        hint="list the base model in the slice's sources with the same layer_range",
                    )
                )
            others = [m for m in models if m != base]
        count = len(others)
        high = self.max_models
        if count < self.min_models or (high is not None and count > high):
            listed = f" ({', '.join(others)})" if others else ""
            if high is not None and count > high:
                if self.base != "unused" and base is None:
                    hint = "if one of them is the base model, name it under `base_model:`"
                else:
                    hint = f"remove {_models(count - high)}, or use a method that takes more"
            elif self.base != "unused" and base is not None and base in models:
                hint = f"the base model {base} is not counted; add {_more(self.min_models - count)}"
            else:
                hint = f"add {_more(self.min_models - count)}"
            problems.append(
                InputProblem(
                    "model-count",
                    f"{self.name} takes {self.wants()}; got {count}{listed}",
                    hint=hint,
                    expected=self.wants(),
                    got=str(count),
                )
            )
        return problems

    def load(self) -> Callable[..., Any]:
        module_name, _, function_name = self.impl.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, function_name)
