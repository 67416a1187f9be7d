"""Apply + merge: the adapter applied lazily inside the merge vs the adapted model written first.

    /work/main/.venv/bin/python benchmarks/apply.py                 # 300M (needs ~3 GB disk)
    /work/main/.venv/bin/python benchmarks/apply.py --sizes 20M     # a quick smoke run

The lossless method's middle: a LoRA trained on `base` applied to `instruct`, then TIES-merged
with `instruct` and `base` as the reference. Inputs are Llama-shaped random bf16 checkpoints
(benchmarks/merge.py writes them) and a rank-16 all-linear LoRA written straight to safetensors.
Each case runs in a fresh subprocess, so its peak RSS is its own:
  - lazy:        TIES over an AdaptedSource (W + s·B·A computed per tensor while streaming);
  - materialise: the adapted model written out in full (a passthrough plan through
                 build_output, as `apply: {save: true}` does), then TIES from the files on disk;
  - peft:        what mergekit's `model+lora` does first: the whole target loaded in
                 transformers, `PeftModel.from_pretrained(...).merge_and_unload()`,
                 `save_pretrained`, then TIES from the files on disk.
Prints a table; asserts nothing.

Measured 2026-11-23, 336M params, 2 shared CPU cores, page cache warm (TIES dominates):
  lazy 31.7 s / 1.59 GiB; materialise 35.4 s / 1.69 GiB; peft 40.9 s / 1.91 GiB.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from children import run_child
from merge import SIZES, llama_config, llama_shapes, write_checkpoint

RANK, ALPHA = 16, 32
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_adapter(path: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int) -> None:
    """A PEFT-layout LoRA (fp32 A and B, both non-zero) on every linear layer."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_features, in_features) in (
        (n, s) for n, s in shapes if n.split(".")[-2] in TARGETS
    ):
        key = "base_model.model." + name.removesuffix(".weight")
        tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, in_features, generator=gen) * 0.01
        tensors[f"{key}.lora_B.weight"] = torch.randn(out_features, RANK, generator=gen) * 0.01
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "target_modules": TARGETS}
    (path / "adapter_config.json").write_text(json.dumps(config))


CHILD = """
import sys, time, json
import torch  # imported before the clock starts
from pathlib import Path
from lossless.tensors.adapters import check_fits, load_adapter
from lossless.merge.output import build_output
from lossless.merge.planner import build_plan
from lossless.recipe.model import InputModel, MergeStep, ModelRef
from lossless.steps.apply import copy_plan
from lossless.tensors.adapted import AdaptedSource
from lossless.tensors.checkpoint import Checkpoint
mode, base_dir, instruct_dir, adapter_dir, work = sys.argv[1:]
work = Path(work)
start = time.perf_counter()

def adapted():
    target = Checkpoint(instruct_dir, label="instruct")
    adapter = load_adapter(Path(adapter_dir))
    check_fits(adapter, target)
    return AdaptedSource(target, [(adapter, 1.0)], label="adapted")

def build(plan, sources, out):
    build_output(plan, sources, out, fingerprint="bench", recipe_text="", write_model_card=False,
                 quiet=True)

if mode == "lazy":
    first = adapted()
elif mode == "peft":
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(instruct_dir, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.save_pretrained(work / "adapted")
    del model
    first = Checkpoint(work / "adapted", label="adapted")
else:
    source = adapted()
    build(copy_plan("adapted", source), {"adapted": source}, work / "adapted")
    first = Checkpoint(work / "adapted", label="adapted")
mid = time.perf_counter()
sources = {"adapted": first, "instruct": Checkpoint(instruct_dir, label="instruct"),
           "base": Checkpoint(base_dir, label="base")}
step = MergeStep(
    name="merged", merge_method="ties", base_model=ModelRef("base"),
    models=tuple(InputModel(ModelRef(m), {"weight": 1.0, "density": 0.5})
                 for m in ("adapted", "instruct")),
    parameters={"normalize": True, "int8_mask": True}, dtype="bfloat16")
build(build_plan(step, sources), sources, work / "merged")
end = time.perf_counter()
print(json.dumps({"seconds": end - start, "apply": mid - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="300M", help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lossless-bench-apply"))
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        shapes = llama_shapes(size)
        params = sum(math.prod(s) for _, s in shapes)
        root = args.dir / size
        base, instruct, adapter = root / "base", root / "instruct", root / "adapter"
        for seed, d in enumerate((base, instruct)):
            if not (d / "model.safetensors.index.json").is_file():
                print(f"writing {d} ({params / 1e6:.0f}M params, bf16)", flush=True)
                write_checkpoint(d, size, seed=seed)
                (d / "config.json").write_text(json.dumps(llama_config(size)))
        if not (adapter / "adapter_model.safetensors").is_file():
            write_adapter(adapter, shapes, seed=7)
        results = {}
        for mode in (
            "lazy",
            "materialise",
            "peft",
            "lazy",
        ):  # lazy twice: the first warms the cache
            work = root / f"work-{mode}"
            shutil.rmtree(work, ignore_errors=True)
            child = [mode, str(base), str(instruct), str(adapter), str(work)]
            timing, rss = run_child(CHILD, child)
            results[mode] = (timing, rss)
            shutil.rmtree(work, ignore_errors=True)
        for mode, (timing, rss) in results.items():
            rows.append((size, mode, timing["seconds"], timing["apply"], rss))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'size':>6} {'path':<12} {'total s':>8} {'apply s':>8} {'peak RSS GiB':>13}")
    for size, mode, total, apply, rss in rows:
        print(f"{size:>6} {mode:<12} {total:8.1f} {apply:8.1f} {rss:13.2f}")
    by = {(r[0], r[1]): r for r in rows}
    for size in args.sizes.split(","):
        lazy = by[(size, "lazy")]
        for other in ("materialise", "peft"):
            full = by[(size, other)]
            print(
                f"{size}: lazy vs {other}: {full[2] / lazy[2]:.2f}x faster, "
                f"peak RSS {lazy[4] / full[4]:.2f}x"
            )


if __name__ == "__main__":
    main()
