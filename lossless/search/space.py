"""The search space: where each varied value sits in a stage config, and the points to try.

A `vary` key is a YAML path into the stage's mergekit config, written as `format_yaml_path`
writes it; the value is `{choices: [...]}` or `{low, high, step?, log?}`:

    >>> parse_path("models[0].parameters.weight")
    ('models', 0, 'parameters', 'weight')
    >>> substitute({"models": [{"model": "a", "parameters": {"weight": 1.0}}]},
    ...            {("models", 0, "parameters", "weight"): 0.5})["models"][0]["parameters"]
    {'weight': 0.5}
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lossless.recipe.model import MergeSearch, SearchDimension

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
# Grid points are rounded so that 0.1 + 2 × 0.1 is written 0.3, not 0.30000000000000004.
DIGITS = 12


class BadPath(ValueError):
    pass


def parse_path(text: str) -> tuple[str | int, ...]:
    """`models[0].parameters.weight` → ("models", 0, "parameters", "weight"); BadPath if unreadable."""
    parts: list[str | int] = []
    pos = 0
    for match in _PART.finditer(text):
        gap = text[pos : match.start()]
        name, index = match.groups()
        # a name follows a dot (except the first), an index follows directly: `a.b[0].c`
        if gap != ("" if index is not None or not parts else "."):
            raise BadPath(text)
        parts.append(int(index) if index is not None else name)
        pos = match.end()
    if pos != len(text) or not parts or isinstance(parts[0], int):
        raise BadPath(text)
    return tuple(parts)


def lookup(config: Any, keys: Sequence[str | int]) -> tuple[bool, Any]:
    """(found, value) of `keys` inside nested dicts and lists."""
    node = config
    for key in keys:
        in_list = isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node)
        in_map = isinstance(key, str) and isinstance(node, Mapping) and key in node
        if not (in_list or in_map):
            return False, None
        node = node[key]
    return True, node


def substitute(config: Mapping[str, Any], values: Mapping[tuple[str | int, ...], Any]) -> Any:
    """A deep copy of `config` with each path set to its value (every path must exist)."""
    out = copy.deepcopy(dict(config))
    for keys, value in values.items():
        node: Any = out
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = copy.deepcopy(value)
    return out


def _number(value: float, integral: bool) -> float | int:
    return round(value) if integral else round(value, DIGITS)


def is_integral(dim: SearchDimension) -> bool:
    """A range of integers: low, high and step all written as integers."""
    return all(
        isinstance(v, int) and not isinstance(v, bool) for v in (dim.low, dim.high, dim.step)
    )


def lattice(dim: SearchDimension) -> list[Any]:
    """Every value a grid tries: the choices, or low, low + step, ... up to high (inclusive)."""
    if dim.choices is not None:
        return list(dim.choices)
    assert dim.low is not None and dim.high is not None
    if dim.step is None:
        raise ValueError(f"{dim.name}: a grid needs `step` on a range")
    count = math.floor((dim.high - dim.low) / dim.step + 1e-9) + 1
    return [_number(dim.low + i * dim.step, is_integral(dim)) for i in range(count)]


def grid_size(dims: Sequence[SearchDimension]) -> int:
    return math.prod(len(lattice(d)) for d in dims)


def grid(dims: Sequence[SearchDimension]) -> Iterator[dict[str, Any]]:
    """Every point of the grid, the first dimension varying slowest."""
    for combo in itertools.product(*(lattice(d) for d in dims)):
        yield {d.name: v for d, v in zip(dims, combo, strict=True)}


def snap(dim: SearchDimension, value: float) -> float | int:
    """A sampled number onto the range's lattice (when it has a step), inside [low, high]."""
    assert dim.low is not None and dim.high is not None
    if dim.step is not None:
        steps = round((value - dim.low) / dim.step)
        value = min(dim.high, dim.low + steps * dim.step)
        return _number(value, is_integral(dim))
    return float(value)


def point_values(
    dims: Sequence[SearchDimension], point: Mapping[str, Any]
) -> dict[tuple[str | int, ...], Any]:
    """{vary name: value} → {config path: value}, for `substitute`."""
    return {d.keys: point[d.name] for d in dims}


def trial_budget(search: MergeSearch) -> int:
    """`trials`, or for a grid without one, every grid point."""
    return search.trials if search.trials is not None else grid_size(search.vary)
