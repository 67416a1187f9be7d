"""mergekit's parameter semantics: a value is a scalar, a gradient, or a list of filtered entries.

Facts checked against mergekit 0.1.5 (`config.evaluate_setting`, `parameter_resolver`):
- scalar: itself.
- gradient (a list of scalars): numbers are interpolated piecewise-linearly at `t` over evenly
  spaced points, so [0, 0.5, 1] at t = 0.25 gives 0.25 and [0, 1] at t = 0.5 gives 0.5;
  booleans/strings pick `values[int(t * (n - 1))]` instead (no interpolation).
- filtered (a list of `{filter, value}` mappings, or one such mapping): the first entry whose
  `filter` is missing, `*`, or a substring of the tensor name wins; its value may be a gradient.
  When nothing matches the result is None, and the caller falls through to the next, less
  specific level (`resolve_first`), exactly as mergekit does.
- precedence, most specific first: slices[].sources[].parameters, slices[].parameters,
  models[].parameters (mergekit turns `models:` into one slice whose sources carry them), then
  the top-level `parameters`. The first level that *yields a value* wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lossless.errors import LosslessError

Scalar = bool | int | float | str


def _is_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def interpolate(values: Sequence[Scalar], t: float) -> Scalar:
    """The gradient `values` at `t` in [0, 1]: [0, 0.5, 1] at t=0.75 → 0.75; ["a", "b"] at 0.9 → "a"."""
    if not values:
        raise LosslessError("a parameter gradient is an empty list", hint="give at least one value")
    if not all(_is_number(v) for v in values):
        return values[int(t * (len(values) - 1))]
    numbers = [float(v) for v in values]
    scaled = t * (len(numbers) - 1)
    low = int(scaled)
    high = min(len(numbers) - 1, low + 1)
    frac = scaled - low
    return (1 - frac) * numbers[low] + frac * numbers[high]


def _filter_matches(entry_filter: Any, tensor_name: str) -> bool:
    return (
        entry_filter is None
        or entry_filter == "*"
        or (bool(tensor_name) and entry_filter in tensor_name)
    )


def resolve(value: Any, *, tensor_name: str, t: float) -> Scalar | None:
    """One parameter value as a scalar for `tensor_name` at gradient position `t`.

    Returns None when `value` is a filter list that matches nothing (the caller then looks at
    the next precedence level).
    """
    if isinstance(value, Mapping):  # a lone {filter, value} entry
        value = [value]
    if _is_scalar(value):
        return value
    if isinstance(value, list | tuple):
        if not value:
            return None
        if all(_is_scalar(v) for v in value):
            return interpolate(value, t)
        for entry in value:
            if not isinstance(entry, Mapping) or "value" not in entry:
                raise LosslessError(
                    f"parameter entry {entry!r} mixes scalars and filters",
                    hint="use either a list of numbers (a gradient) or a list of {filter, value}",
                )
            if _filter_matches(entry.get("filter"), tensor_name):
                return resolve(entry["value"], tensor_name=tensor_name, t=t)
        return None
    raise LosslessError(
        f"parameter value {value!r} is not a scalar, a gradient or a list of {{filter, value}}"
    )


def resolve_first(
    levels: Iterable[Mapping[str, Any] | None], name: str, *, tensor_name: str, t: float
) -> Scalar | None:
    """`name` from the first level (most specific first) whose setting yields a value."""
    for level in levels:
        if level and name in level:
            result = resolve(level[name], tensor_name=tensor_name, t=t)
            if result is not None:
                return result
    return None


def layer_t(index: int, count: int) -> float:
    """Gradient position of layer `index` of a slice of `count` layers: i / (n - 1).

    A one-layer slice gets t = 1, not 0: mergekit 0.1.5 (`MergePlanner.plan_slice`) does so, so
    a gradient [a, b] on a one-layer slice gives b. Non-layer tensors use t = 0.
    """
    return index / (count - 1) if count > 1 else 1.0
