"""lossless: keep improving an open LLM without it forgetting.

Train a LoRA on the base model, apply it to the instruct model, TIES-merge with the base as
reference and measure forgetting, all from one YAML recipe (`lossless run recipe.yaml`).

The Python API (`lossless.api`, imported on first use so `import lossless` stays light):
    lossless.run("recipe.yaml", quiet=True) · lossless.validate("recipe.yaml") ·
    lossless.load_recipe("recipe.yaml")
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes' CPU backend, imported with peft, logs that an optional GPU-kernel download
# ("pip install kernels") failed: it runs without it, and the advice is wrong for lossless users.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)


_API = ("run", "validate", "load_recipe")
__all__ = ["__version__", *_API]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name in _API:
        from lossless import api

        return getattr(api, name)
    raise AttributeError(f"module 'lossless' has no attribute {name!r}")
