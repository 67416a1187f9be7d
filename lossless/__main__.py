"""`python -m lossless` is the same as the `lossless` console script."""

from lossless.cli import entry

entry()
