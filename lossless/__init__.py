"""lossless: keep improving an open LLM without it forgetting.

Train a LoRA on the base model, apply it to the instruct model, TIES-merge with the base as
reference and measure forgetting, all from one YAML recipe (`lossless run recipe.yaml`).
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes' CPU backend, imported with peft, logs that an optional GPU-kernel download
# ("pip install kernels") failed: it runs without it, and the advice is wrong for lossless users.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
