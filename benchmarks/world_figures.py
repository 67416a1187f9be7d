"""How far each change moved the quickstart's weights: is the tiny world like a real base/instruct pair?

    python benchmarks/world_figures.py [WORK_DIR]     # default recipes/.lossless/quickstart

After `lossless run recipes/quickstart.yaml`, prints (global Frobenius norms over every tensor;
"linear" = the q/k/v/o/gate/up/down projections a LoRA targets):
  ‖instruct − base‖ / ‖base‖       how far instruct tuning moved the base
  ‖LoRA Δ‖ / ‖base‖                how far the new skill's LoRA moves its model (scale·B·A,
                                   through the project's own adapter reader)
  ‖naive − instruct‖ / ‖base‖      how far the naive fine-tune moved instruct
and the held-out C exact match of instruct, naive and merged from the eval step, i.e. how much
of the naive fine-tune's gain the LoRA delivers once merged. In a real 7B pair instruct tuning
moves a few percent of the base's norm; the quickstart's tiny models move more (about 13 %), so
the recipe trains its LoRA on the instruct model itself rather than hoping a base LoRA transfers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update({k: v.float() for k, v in load_file(str(shard)).items()})
    return out


def norm(tensors) -> float:  # type: ignore[no-untyped-def]
    return float(torch.sqrt(sum((t.float() ** 2).sum() for t in tensors)))


def main(argv: list[str]) -> int:
    from lossless.tensors.adapters import load_adapter

    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    work = Path(argv[0]) if argv else ROOT / "recipes" / ".lossless" / "quickstart"
    if not (work / "base").is_dir():
        print(f"{work / 'base'} not found: run `lossless run recipes/quickstart.yaml` first")
        return 2
    base, instruct = weights(work / "base"), weights(work / "instruct")
    linear = [k for k in base if k.endswith("proj.weight")]
    size, size_linear = norm(base.values()), norm(base[k] for k in linear)

    def moved(other: dict[str, torch.Tensor], against: dict[str, torch.Tensor]) -> str:
        every = norm(other[k] - against[k] for k in against) / size
        lin = norm(other[k] - against[k] for k in linear) / size_linear
        return f"all {every:.3f}, linear {lin:.3f}"

    print(f"‖instruct − base‖ / ‖base‖   {moved(instruct, base)}")
    if (work / "new_skill" / "adapter_config.json").is_file():
        adapter = load_adapter(work / "new_skill")
        deltas = [f.delta() for f in adapter.lora.values()]
        print(
            f"‖LoRA Δ‖ / ‖base‖           all {norm(deltas) / size:.3f}, "
            f"linear {norm(deltas) / size_linear:.3f}"
        )
    if (work / "naive").is_dir():
        print(f"‖naive − instruct‖ / ‖base‖ {moved(weights(work / 'naive'), instruct)}")
    report = work / "forgetting" / "eval.json"
    if report.is_file():
        scores = json.loads(report.read_text())["scores"]
        c = {
            m: scores[m]["C"]["exact_match"] for m in ("instruct", "naive", "merged") if m in scores
        }
        if len(c) == 3:
            gain = (c["merged"] - c["instruct"]) / max(c["naive"] - c["instruct"], 1e-9)
            print(
                f"C exact match: instruct {c['instruct']:.3f}, naive {c['naive']:.3f}, merged "
                f"{c['merged']:.3f} ({gain:.0%} of the naive fine-tune's gain)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
