"""A PEFT LoRA adapter directory read as "what it does to each tensor of a model".

An `Adapter` maps target tensor names (`model.layers.0.self_attn.q_proj.weight`) to how the
adapter changes them, following peft 0.21's `merge_and_unload` exactly:

- LoRA on a Linear: W + s·B·A with s = alpha/r (alpha/√r with `use_rslora`), r and alpha taken
  from `rank_pattern` / `alpha_pattern` when a pattern matches the module (peft's regex rule
  `(.*\\.)?(PATTERN)$`); transposed for `fan_in_fan_out` (GPT-2 Conv1D stores W as [in, out]).
- LoRA on an Embedding: W + s·(B·A)ᵀ (`lora_embedding_A` is [r, vocab], `_B` is [dim, r]).
- DoRA (`lora_magnitude_vector`): W' = m · (W + ΔW) / ‖W + ΔW‖, the norm taken per output row
  for a Linear (per column of W as stored for a `fan_in_fan_out` Linear and for an Embedding,
  whose peft layer is built with fan_in_fan_out=True), m broadcast the same way.
- `lora_bias`: bias + s·lora_B.bias.
- Full tensors saved in the adapter (`modules_to_save`, trained biases with `bias: all|lora_only`,
  an embedding's `base_layer.weight` that peft saves when it targets embeddings) replace the
  target model's tensor, as `PeftModel.from_pretrained` loads them over it.

The delta math is pure tensor code over a range of W's rows [lo, hi), since a merge streams
tensors by rows (tensors/adapted.py): rows of ΔW = s·B·A are s·B[lo:hi]·A for a Linear and
s·(A[:, lo:hi])ᵀ·Bᵀ when the product is transposed (Embedding, fan_in_fan_out). DoRA's per-row
norm needs only the rows' own entries; its per-column norm needs every row, so the caller sums
the columns' squares over all rows first (`column_squares`) and hands the norms in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lossless.errors import LosslessError
from lossless.tensors.adapter_file import SavedTensor, read_weights

T = TypeVar("T")

if TYPE_CHECKING:
    import torch

    from lossless.tensors.source import TensorSource

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
PREFIX = "base_model.model."  # peft's saved keys: PREFIX + module path + suffix

# Key suffix → role, for the keys that carry LoRA factors rather than whole tensors.
LORA_SUFFIXES: dict[str, str] = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_B.bias": "bias",
    ".lora_embedding_A": "emb_A",
    ".lora_embedding_B": "emb_B",
    ".lora_magnitude_vector": "magnitude",
    ".lora_magnitude_vector.weight": "magnitude",  # peft < 0.12 spelling
}


@dataclass(frozen=True)
class LoraFactors:
    """One module's LoRA: the factors, its scale and how the product lines up with W."""

    module: str  # "model.layers.0.self_attn.q_proj"
    a: torch.Tensor  # [r, in] (Linear) or [r, vocab] (Embedding)
    b: torch.Tensor  # [out, r] (Linear) or [dim, r] (Embedding)
    scale: float  # alpha / r, e.g. 8 / 4 = 2.0
    embedding: bool = False
    fan_in_fan_out: bool = False
    magnitude: torch.Tensor | None = None  # DoRA's m, [out] or [dim]

    @property
    def expected_shape(self) -> tuple[int, ...]:
        """The shape W must have for this LoRA to fit it."""
        rows, cols = (
            (self.a.shape[1], self.b.shape[0])
            if self.embedding
            else (self.b.shape[0], self.a.shape[1])
        )
        return (cols, rows) if self.fan_in_fan_out else (rows, cols)

    @property
    def transposed(self) -> bool:
        """Whether W holds (B·A)ᵀ: an Embedding's [vocab, dim], a Conv1D's [in, out]."""
        return self.embedding or self.fan_in_fan_out

    @property
    def norms_columns(self) -> bool:
        """DoRA with its norm down W's columns: it needs every row before any row is final."""
        return self.magnitude is not None and self.transposed

    @property
    def row_count(self) -> int:
        return int(self.expected_shape[0])

    def delta(self) -> torch.Tensor:
        """s·B·A in W's own orientation, float32."""
        return self.delta_rows(0, self.row_count)

    def delta_rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of s·B·A in W's orientation, float32, from the factors' rows only."""
        if self.transposed:
            product = self.a[:, lo:hi].float().T @ self.b.float().T
        else:
            product = self.b[lo:hi].float() @ self.a.float()
        return product * self.scale

    def merged_rows(self, rows: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of W + ΔW from W's float32 rows (DoRA's direction, before rescaling)."""
        return rows + self.delta_rows(lo, hi)

    def column_squares(self, rows: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Σ over rows [lo, hi) of (W + ΔW)² per column, float64 (summed over all rows, its
        square root is the norm a column-norm DoRA divides by)."""
        import torch

        return self.merged_rows(rows, lo, hi).square().sum(dim=0, dtype=torch.float64)

    def apply_rows(
        self,
        rows: torch.Tensor,
        lo: int,
        hi: int,
        column_norms: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rows [lo, hi) of W after this LoRA, from W's float32 rows; DoRA rescales each row to
        m (peft's norm along dim 1 of [out, in]), or each column when `norms_columns`, by
        `column_norms` (the whole tensor's, see `column_squares`)."""
        import torch

        merged = self.merged_rows(rows, lo, hi)
        if self.magnitude is None:
            return merged
        magnitude = self.magnitude.float()
        if self.norms_columns:
            if column_norms is None:
                raise ValueError(f"DoRA on {self.module} needs the column norms of all its rows")
            return merged * (magnitude / column_norms).view(1, -1)
        norm = torch.linalg.norm(merged, dim=1)
        return merged * (magnitude[lo:hi] / norm).view(-1, 1)


@dataclass
class Adapter:
    """A loaded adapter: per target tensor name, the LoRA, the bias delta or the replacement."""

    path: Path
    config: Mapping[str, Any]
    lora: dict[str, LoraFactors] = field(default_factory=dict)  # "...q_proj.weight" → factors
    bias_deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # "...q_proj.bias" → s·b
    # "lm_head.weight" → the tensor saved whole, read by rows from the file (adapter_file.py)
    replaced: dict[str, SavedTensor] = field(default_factory=dict)

    @property
    def targets(self) -> set[str]:
        return set(self.lora) | set(self.bias_deltas) | set(self.replaced)

    def norms_columns(self, name: str) -> bool:
        """Whether tensor `name` needs `column_squares` over all its rows first (DoRA by columns)."""
        return name in self.lora and self.lora[name].norms_columns

    def _source_rows(self, name: str, rows: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """What the LoRA of `name` sees: a tensor the adapter saved whole replaces the model's."""
        return self.replaced[name].rows(lo, hi).float() if name in self.replaced else rows

    def column_squares(self, name: str, rows: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """`LoraFactors.column_squares` of rows [lo, hi) of tensor `name` (see `norms_columns`)."""
        return self.lora[name].column_squares(self._source_rows(name, rows, lo, hi), lo, hi)

    def apply_rows(
        self,
        name: str,
        rows: torch.Tensor,
        lo: int,
        hi: int,
        column_norms: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rows [lo, hi) of tensor `name` after this adapter, from the target's float32 rows;
        `column_norms` for a tensor that `norms_columns`."""
        out = self._source_rows(name, rows, lo, hi)
        if name in self.lora:
            out = self.lora[name].apply_rows(out, lo, hi, column_norms)
        if name in self.bias_deltas:
            out = out + self.bias_deltas[name][lo:hi]
        return out


def load_adapter(
    path: Path, *, allow_pickle: bool = False, allow_non_finite: bool = False
) -> Adapter:
    """Read a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)."""
    path = Path(path)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise LosslessError(
            f"{path} is not a PEFT adapter: {CONFIG} is missing",
            hint="an adapter directory holds adapter_config.json and adapter_model.safetensors",
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise LosslessError(f"{config_file}: not valid JSON ({e})") from None
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise LosslessError(
            f"{path}: a {peft_type} adapter cannot be applied as weights; only LoRA/DoRA can",
            hint="merge it with peft (merge_and_unload) and use the saved model instead",
        )
    weights = read_weights(
        path / WEIGHTS,
        path / PICKLE_WEIGHTS,
        allow_pickle=allow_pickle,
        allow_non_finite=allow_non_finite,
    )
    return _build(path, config, weights)


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's rank_pattern/alpha_pattern rule: the first key matching the module's name end."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def group_adapter_keys(
    entries: Mapping[str, T],
) -> tuple[dict[str, dict[str, T]], dict[str, T]]:
    """An adapter file's entries (tensors, or their shapes) by what they are: LoRA factors as
    module → role ("A", "B", "emb_A", ...) → entry, and whole tensors peft saved (modules_to_save,
    trained biases, an embedding's base weight) by the model's own name (`base_layer.` is peft's
    wrapper level, absent from the model's names). Shared with `lossless validate`'s check."""
    parts: dict[str, dict[str, T]] = {}
    replaced: dict[str, T] = {}
    for key, entry in entries.items():
        name = key.removeprefix(PREFIX)
        for suffix, role in LORA_SUFFIXES.items():
            if name.endswith(suffix):
                parts.setdefault(name.removesuffix(suffix), {})[role] = entry
                break
        else:
            replaced[name.replace(".base_layer.", ".")] = entry
    return parts, replaced


def _build(path: Path, config: Mapping[str, Any], weights: Mapping[str, SavedTensor]) -> Adapter:
    adapter = Adapter(path=path, config=config)
    saved, adapter.replaced = group_adapter_keys(weights)
    # the LoRA factors are small: read whole; the tensors saved whole are read by rows
    parts = {m: {role: t.whole() for role, t in found.items()} for m, found in saved.items()}
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    for module, found in parts.items():
        embedding = "emb_A" in found
        a, b = (
            (found.get("emb_A"), found.get("emb_B"))
            if embedding
            else (found.get("A"), found.get("B"))
        )
        if a is None or b is None:
            raise LosslessError(
                f"{path / WEIGHTS}: module `{module}` has only part of its LoRA factors "
                f"({', '.join(sorted(found))})",
                hint="the adapter file is incomplete; save it again with save_pretrained",
            )
        if a.shape[0] != b.shape[-1]:
            kind = "lora_embedding" if embedding else "lora"
            raise LosslessError(
                f"{path}: module `{module}` has {kind}_A of rank {a.shape[0]} "
                f"({list(a.shape)}) but {kind}_B of rank {b.shape[-1]} ({list(b.shape)})",
                hint="A is [r, in] and B is [out, r] with one r; the adapter file is damaged "
                "or its factors come from different adapters",
            )
        r = int(_pattern_value(rank_pattern, module, config.get("r", a.shape[0])))
        alpha = float(_pattern_value(alpha_pattern, module, config.get("lora_alpha", r)))
        if r != a.shape[0]:
            raise LosslessError(
                f"{path}: module `{module}` has rank {a.shape[0]} in its weights but {r} in "
                f"{CONFIG}",
                hint="the config and weights come from different adapters",
            )
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        factors = LoraFactors(
            module=module,
            a=a,
            b=b,
            scale=scale,
            embedding=embedding,
            fan_in_fan_out=bool(config.get("fan_in_fan_out")) and not embedding,
            magnitude=found.get("magnitude"),
        )
        adapter.lora[f"{module}.weight"] = factors
        if "bias" in found:
            adapter.bias_deltas[f"{module}.bias"] = found["bias"].float() * scale
    return adapter


def check_fits(adapter: Adapter, base: TensorSource) -> None:
    """Refuse, before anything is written, an adapter whose targets the model lacks or misshapes."""
    names = set(base.tensor_names())
    problems: list[str] = []
    for name in sorted(adapter.targets):
        if name not in names:
            problems.append(f"`{name}` is not in the model")
            continue
        have = tuple(base.shape(name))
        wants = []
        if name in adapter.lora:
            wants.append(tuple(adapter.lora[name].expected_shape))
        if name in adapter.bias_deltas:
            wants.append(tuple(adapter.bias_deltas[name].shape))
        if name in adapter.replaced:
            wants.append(tuple(adapter.replaced[name].shape))
        for want in wants:
            if want != have:
                problems.append(
                    f"`{name}`: adapter expects shape {list(want)}, model has {list(have)}"
                )
    if problems:
        shown = "\n  ".join(problems[:8]) + (
            f"\n  ... {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise LosslessError(
            f"adapter {adapter.path} does not fit `{base.label}`:\n  {shown}",
            hint="apply an adapter to a model of the architecture and sizes it was trained on "
            f"(adapter_config.json names {adapter.config.get('base_model_name_or_path')!r})",
        )


def record_base_model(adapter_dir: Path, base: str, revision: str | None = None) -> None:
    """Write `base` (a hub id) as the adapter's `base_model_name_or_path`.

    peft records the directory the base was loaded from, which for a hub model is a snapshot
    path in this machine's cache; the hub id is what lets `PeftModel.from_pretrained` (and the
    hub's model tree) find the base anywhere else. Nothing to do when there is no adapter config.
    """
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base
    if revision:
        config["revision"] = revision
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
