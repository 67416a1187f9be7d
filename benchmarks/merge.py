"""Merge speed and memory on Llama-shaped random checkpoints, against the machine's I/O floor.

    /work/main/.venv/bin/python benchmarks/merge.py                  # 300M and 1B (needs ~25 GB disk)
    /work/main/.venv/bin/python benchmarks/merge.py --sizes 20M      # a quick smoke run
    /work/main/.venv/bin/python benchmarks/merge.py --sizes 70B-layer --models 2 --memory 4G
        # Llama-3-70B's largest tensors (128256 × 8192 embeddings and lm_head, 28672 × 8192 MLP
        # matrices, one decoder layer: 3B parameters, 5.9 GB a checkpoint; needs ~25 GB disk)

For each size it writes four bf16 checkpoints (a base and three fine-tunes, sharded like the hub:
an index + ~1 GB shards), then times, each in a fresh subprocess so peak RSS is the merge's own:
  - TIES of base + 3 models (linear over the 4 models when `ties` is not implemented yet),
  - linear of 3 models,
  - the I/O floor: read every input byte once (from the page cache, after a warm-up read) and
    write the output's bytes with fsync, which no merge can beat.
Prints a table; asserts nothing (timings belong in reports, not tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# name → (hidden, intermediate, layers); vocab 32000, 4 KV heads of 64 (Llama/TinyLlama-like).
SIZES = {
    "20M": (256, 688, 4),
    "300M": (1024, 2816, 24),
    "1B": (2048, 5632, 22),
    "70B-layer": (8192, 28672, 1),
}
VOCABS = {"70B-layer": 128256}
VOCAB = 32000
SHARD_BYTES = 1 << 30


def llama_shapes(
    hidden: int, inter: int, layers: int, vocab: int = VOCAB
) -> list[tuple[str, tuple[int, ...]]]:
    kv = 4 * 64 if vocab == VOCAB else 8 * 128  # Llama-3-70B: 8 KV heads of 128
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv, hidden)),
            (p + "self_attn.v_proj.weight", (kv, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
        ]
    return [*shapes, ("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def write_checkpoint(path: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int) -> None:
    """bf16 random weights saved shard by shard (never the whole model in memory)."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 2 * int(torch.Size(shape).numel())
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    weight_map = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: _random_bf16(s, gen) for n, s in group}
        save_file(tensors, str(path / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in tensors})
        del tensors
    index = {"metadata": {}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))


def _random_bf16(shape: tuple[int, ...], gen: Any) -> Any:
    """N(0, 0.02²) in bf16, drawn a row block at a time (no whole float32 copy)."""
    import torch

    out = torch.empty(shape, dtype=torch.bfloat16)
    step = max(1, (1 << 26) // max(1, math.prod(shape[1:])))
    for lo in range(0, shape[0], step):
        part = out[lo : lo + step]
        part.copy_(torch.randn(part.shape, generator=gen).mul_(0.02))
    return out


MERGE_CHILD = """
import sys, time, json
import torch  # imported before the clock starts: startup is not merge time
from pathlib import Path
from lossless.merge.executor import execute
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.methods.table import METHODS
from lossless.tensors.checkpoint import Checkpoint
method, out, threads, memory, *dirs = sys.argv[1:]
srcs = {f"m{i}": Checkpoint(d) for i, d in enumerate(dirs)}
first = srcs["m0"]
if method == "ties":
    base, models = "m0", list(srcs)[1:]
    mp = tuple({"weight": 1.0, "density": 0.5} for _ in models)
    params = {"normalize": True, "int8_mask": True, "lambda": 1.0}
else:
    base, models = None, list(srcs)
    mp = tuple({"weight": 1.0} for _ in models)
    params = {"normalize": True}
jobs = tuple(
    TensorJob(output=n, method=method, sources=tuple(TensorRef(m, n) for m in models),
              base=TensorRef(base, n) if base else None, model_params=mp, params=params,
              shape=first.shape(n), out_dtype="bfloat16", compute_dtype="float32")
    for n in first.tensor_names()
)
start = time.perf_counter()
execute(MergePlan(jobs=jobs), srcs, Path(out), shard_size=5 * 10**9,
        num_threads=int(threads) or None, quiet=True, memory=int(memory) or None)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

FLOOR_CHILD = """
import sys, time, json, os
from pathlib import Path
out, out_bytes, *files = sys.argv[1:]
buf = bytearray(1 << 24)
view = memoryview(buf)
start = time.perf_counter()
for f in files:
    with open(f, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass
read = time.perf_counter() - start
remaining = int(out_bytes)
with open(out, "wb") as fh:
    while remaining:
        n = min(remaining, len(buf))
        fh.write(view[:n])
        remaining -= n
    fh.flush()
    os.fsync(fh.fileno())
total = time.perf_counter() - start
os.unlink(out)
print(json.dumps({"seconds": total, "read": read}))
"""


def run_child(code: str, args: list[str]) -> tuple[dict[str, float], float]:
    """Run `code` in a fresh interpreter; return its JSON line and its own peak RSS in GiB
    (`os.wait4` gives that child's rusage alone)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", code, *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"child failed:\n{stderr}")
    return json.loads(stdout.strip().splitlines()[-1]), usage.ru_maxrss / 2**20


def has_ties() -> bool:
    sys.path.insert(0, str(ROOT))  # run as a script, benchmarks/ is on the path, not the repo
    try:
        from lossless.methods.table import METHODS

        METHODS["ties"].load()
        return True
    except (ImportError, AttributeError):
        return False


def inputs_files(dirs: list[Path]) -> list[str]:
    return [str(f) for d in dirs for f in sorted(d.glob("*.safetensors"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="300M,1B", help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lossless-bench"))
    parser.add_argument("-j", "--num-threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument("--models", type=int, default=3, help="fine-tunes merged (default 3)")
    parser.add_argument("--memory", default="0", help="merge memory budget (4G); 0: default")
    args = parser.parse_args()
    ties = has_ties()
    from lossless.merge.budget import parse_memory

    memory = parse_memory(args.memory) if args.memory != "0" else 0
    rows = []
    for size in args.sizes.split(","):
        hidden, inter, layers = SIZES[size]
        shapes = llama_shapes(hidden, inter, layers, VOCABS.get(size, VOCAB))
        params = sum(math.prod(s) for _, s in shapes)
        root = args.dir / size
        dirs = [root / f"m{i}" for i in range(args.models + 1)]
        for i, d in enumerate(dirs):
            if not (d / "model.safetensors.index.json").is_file():
                print(f"writing {d} ({params / 1e6:.0f}M params, bf16)", flush=True)
                write_checkpoint(d, shapes, seed=i)
        cases = [("ties" if ties else "linear", dirs, "ties" if ties else "linear(4) for ties")]
        cases.append(("linear", dirs[1:], f"linear of {args.models}"))
        out_bytes = 2 * params
        for method, inputs, label in cases:
            files = inputs_files(inputs)
            in_bytes = sum(os.path.getsize(f) for f in files)
            run_child(FLOOR_CHILD, [str(root / "warm.bin"), "0", *files])  # page-cache warm-up
            floor, _ = run_child(FLOOR_CHILD, [str(root / "floor.bin"), str(out_bytes), *files])
            out = root / "out"
            shutil.rmtree(out, ignore_errors=True)
            merge, rss = run_child(
                MERGE_CHILD,
                [method, str(out), str(args.num_threads), str(memory), *map(str, inputs)],
            )
            shutil.rmtree(out, ignore_errors=True)
            rows.append((size, label, in_bytes, merge["seconds"], floor["seconds"], rss))
            print(
                f"{size:>5} {label:<20} in {in_bytes / 2**30:5.2f} GiB  merge {merge['seconds']:7.2f} s"
                f"  I/O floor {floor['seconds']:6.2f} s  ratio {merge['seconds'] / floor['seconds']:5.2f}"
                f"  peak RSS {rss:5.2f} GiB",
                flush=True,
            )
        if not args.keep:  # only this size's checkpoints: other sizes may be kept on purpose
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
