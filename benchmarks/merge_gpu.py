"""The GPU path checked against the CPU path, method by method, for a machine with CUDA.

    python benchmarks/merge_gpu.py                 # every method, whole and streamed
    python benchmarks/merge_gpu.py --methods ties,linear --size 300M

For each merge method it writes one small mergekit config over bf16 Llama-shaped checkpoints
(benchmarks/merge.py's presets) and runs `lossless run` four times: on the CPU and with
`--device cuda`, each once with the default budget (tensors merged whole) and once with
`--memory 64M` (large tensors streamed in row blocks). It prints, per method and path, whether
the CUDA output's bytes equal the CPU output's, and where not, how many entries differ and by
how many bf16 units in the last place at most: the figures merge/device.py's tolerance note
stands on. Timings against `mergekit-yaml --cuda` come from
`benchmarks/merge.py --device cuda --mergekit ...`.

Without CUDA it says so and exits (there is nothing to compare).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge import llama_config, write_checkpoint  # noqa: E402


def method_config(method: str, dirs: list[Path]) -> dict[str, Any] | None:
    """A valid config of `method` over the fine-tunes in dirs[1:] (dirs[0] the base)."""
    from lossless.methods.table import METHODS

    spec = METHODS[method]
    params: dict[str, Any] = {}
    for name, param in spec.model_params.items():
        if name == "weight":
            params[name] = 0.6
        elif name == "density":
            params[name] = 0.5
        elif param.required:
            return None  # a method this script does not know how to configure
    count = spec.max_models or max(spec.min_models, 2)
    models = [{"model": str(d), "parameters": dict(params)} for d in dirs[1 : 1 + count]]
    config: dict[str, Any] = {"models": models, "merge_method": method, "dtype": "bfloat16"}
    if spec.base != "unused":
        config["base_model"] = str(dirs[0])
    if "t" in spec.global_params:
        config["parameters"] = {"t": 0.3}
    return config


def compare(cpu: Path, cuda: Path) -> str:
    """'same bytes', or how many entries differ and by how many bf16 ulps at most."""
    import torch
    from safetensors.torch import load_file

    differing, worst, total = 0, 0, 0
    for file in sorted(cpu.glob("*.safetensors")):
        a, b = load_file(str(file)), load_file(str(cuda / file.name))
        for name, x in a.items():
            y = b[name]
            total += x.numel()
            if torch.equal(x, y):
                continue
            bits = lambda t: t.contiguous().view(torch.int16).to(torch.int32)  # noqa: E731
            ulps = (bits(x) - bits(y)).abs()
            differing += int((ulps > 0).sum())
            worst = max(worst, int(ulps.max()))
    if not differing:
        return "same bytes"
    return f"{differing} of {total} entries differ, at most {worst} bf16 ulp"


def run(config: Path, out: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "lossless", "run", "-q", "--no-copy-tokenizer", str(config)]
    done = subprocess.run([*cmd, str(out), *extra], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="", help="comma list (default: every method)")
    parser.add_argument("--size", default="20M", help="benchmarks/merge.py preset")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lossless-gpu-check"))
    args = parser.parse_args()
    import torch

    from lossless.methods.table import METHODS

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare (run this on a machine with a GPU)")
        return
    dirs = [args.dir / f"m{i}" for i in range(4)]
    for i, d in enumerate(dirs):
        if not (d / "model.safetensors.index.json").is_file():
            write_checkpoint(d, args.size, i)
        (d / "config.json").write_text(json.dumps(llama_config(args.size)))
    methods = args.methods.split(",") if args.methods else sorted(METHODS)
    print(f"{'method':18} {'whole':40} streamed (--memory 64M)")
    for method in methods:
        config = method_config(method, dirs)
        if config is None:
            print(f"{method:18} (skipped: a required parameter this script does not set)")
            continue
        work = args.dir / method
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "config.yml").write_text(json.dumps(config))
        verdicts = []
        for budget in ([], ["--memory", "64M"]):
            run(work / "config.yml", work / "cpu", "--device", "cpu", *budget)
            run(work / "config.yml", work / "cuda", "--device", "cuda", *budget)
            verdicts.append(compare(work / "cpu", work / "cuda"))
            shutil.rmtree(work / "cpu")
            shutil.rmtree(work / "cuda")
        print(f"{method:18} {verdicts[0]:40} {verdicts[1]}", flush=True)


if __name__ == "__main__":
    main()
