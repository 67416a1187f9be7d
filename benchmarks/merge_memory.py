"""Peak memory of every merge method on checkpoints with 70B-class tensors, under a budget.

    python benchmarks/merge_memory.py                       # every method, --memory 4G
    python benchmarks/merge_memory.py --methods ties,sce --memory 4G --size 70B-layer
    python benchmarks/merge_memory.py --methods nuslerp-columns   # nuslerp_row_wise, unflattened

The issue's target: every method under 4 GiB peak RSS on checkpoints holding Llama-3-70B's
largest tensors (benchmarks/merge.py's `70B-layer` preset: 128256 x 8192 embeddings and
lm_head, 28672 x 8192 MLP matrices; 3B parameters, 5.9 GB a checkpoint, a base and two
fine-tunes, 18 GB of disk). Each method runs `lossless run --memory M` once, in a fresh
process whose own peak RSS comes from `os.wait4`; the table gives wall time and peak RSS.
Configs are those of benchmarks/merge_gpu.py (weight 0.6, density 0.5, t 0.3). Asserts
nothing: the figures go in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge import ChildFailed, in_child, llama_config, load, timed
from merge_gpu import method_config

# method choices that change how a method streams: name → (method, global parameters)
VARIANTS = {
    "nuslerp-columns": ("nuslerp", {"nuslerp_row_wise": True, "nuslerp_flatten": False}),
    "sce-topk": ("sce", {"select_topk": 0.5}),  # the variance cut and its tie replay
}


def config_for(name: str, dirs: list[Path]) -> dict | None:
    method, params = VARIANTS.get(name, (name, {}))
    config = method_config(method, dirs)
    if config is not None and params:
        config["parameters"] = {**config.get("parameters", {}), **params}
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="", help="comma list (default: every method)")
    parser.add_argument("--size", default="70B-layer", help="benchmarks/merge.py preset")
    parser.add_argument("--memory", default="4G", help="lossless --memory")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lossless-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    args = parser.parse_args()
    from lossless.methods.table import METHODS  # no torch: the table is plain data

    root = args.dir / args.size
    dirs = [root / f"m{i}" for i in range(3)]
    for i, d in enumerate(dirs):
        if not (d / "model.safetensors.index.json").is_file():
            print(f"writing {d} (bf16)", flush=True)
            in_child("--write-checkpoint", str(d), args.size, str(i))
        (d / "config.json").write_text(json.dumps(llama_config(args.size)))
    lossless = [sys.executable, "-m", "lossless", "run", "-q", "--no-copy-tokenizer"]
    rows = []
    for method in args.methods.split(",") if args.methods else [*sorted(METHODS), *VARIANTS]:
        config = config_for(method, dirs)
        if config is None:
            continue
        work = root / f"memory-{method}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "config.yml").write_text(json.dumps(config))
        print(f"{method} (load {load()})", flush=True)
        try:
            wall, rss, _ = timed(
                [*lossless, "--memory", args.memory, str(work / "config.yml"), str(work / "out")],
                work,
            )
            rows.append((method, f"{wall:.0f} s", f"{rss:.2f} GiB"))
        except ChildFailed as failed:
            rows.append((method, "failed", str(failed)[:60]))
        print(f"  {rows[-1][1]}, peak RSS {rows[-1][2]}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.size}, --memory {args.memory}, load {load()}\n")
    print("| method | wall | peak RSS |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    over = [m for m, _, rss in rows if rss.endswith("GiB") and float(rss.split()[0]) >= 4]
    print(f"\nover 4 GiB: {', '.join(over) or 'none'}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
