"""lossless: keep improving an open LLM without it forgetting.

Train a LoRA on the base model, apply it to the instruct model, TIES-merge with the base as
reference and measure forgetting, all from one YAML recipe (`lossless run recipe.yaml`).
"""

__version__ = "0.1.0"
