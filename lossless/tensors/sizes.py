"""`--out-shard-size` values: "5B", "500M", "1.5B", "100K" or a plain integer.

The unit is mergekit's: a number of *parameters* per output shard, not bytes; so "5B" of bf16
weights is a 10 GB file. A shard always holds at least one tensor, however large.
"""

from __future__ import annotations

from lossless.errors import LosslessError

SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
DEFAULT_SHARD_SIZE = 5 * 10**9


def parse_shard_size(value: str | int) -> int:
    """ "500M" → 500_000_000; 1000 → 1000. Raises LosslessError on anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip().upper().replace("_", "")
        scale = SUFFIXES.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in SUFFIXES else text
        try:
            number = float(digits) * scale
        except ValueError:
            number = -1.0
    if number < 1 or number != number:  # also rejects NaN
        raise LosslessError(
            f"invalid shard size {value!r}",
            hint='give a number of parameters per shard, e.g. "5B", "500M" or 1000000',
        )
    return int(number)
