"""Merge speed and memory: lossless beside mergekit (when installed) and the machine's I/O floor.

    python benchmarks/merge.py                          # the 300M preset, lossless only
    python benchmarks/merge.py --mergekit /tmp/mk/bin/mergekit-yaml       # side by side
    python benchmarks/merge.py --sizes 70B-layer --memory 4G --mergekit /tmp/mk/bin/mergekit-yaml
        # Llama-3-70B's largest tensors (128256 × 8192 embeddings and lm_head, 28672 × 8192 MLP
        # matrices, one decoder layer: 3B parameters, 5.9 GB a checkpoint, 18 GB of disk)
    python benchmarks/merge.py --device cuda --mergekit ...   # on a GPU: beside mergekit --cuda
    python benchmarks/merge.py --cases della --mergekit ...   # della too (masks differ by design)

mergekit is never a dependency: install it in a virtualenv of its own
(`python -m venv /tmp/mk && /tmp/mk/bin/pip install torch==2.13.0 mergekit==0.1.5`) and name
its `mergekit-yaml` with `--mergekit` or $MERGEKIT_YAML.

For each size it writes bf16 Llama-shaped checkpoints (a base and fine-tunes, sharded like the
hub), then, for each merge config (the YAML both tools read), runs interleaved, each in a fresh
process whose own peak RSS is taken from `os.wait4`:
  - the I/O floor: a warm read of every input byte and a page-cache write of the output's
    bytes, which no merge can beat (the fastest of the rounds: noise only slows it);
  - `mergekit-yaml config.yml out` (CPU), when given;
  - `lossless run config.yml out`;
and checks that both outputs hold the same tensors, bit for bit. After each command the
written pages are flushed (`sync`, untimed), so none runs beside the previous one's writeback
(which slowed a 2 s lossless merge after mergekit's by a second). Prints a table; asserts
nothing (timings belong in reports, not tests). `uptime`'s load is printed with each merge:
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# name → (hidden, intermediate, layers, vocab, attention heads, KV heads)
SIZES = {
    "20M": (256, 688, 4, 32000, 4, 4),
    "300M": (1024, 2816, 24, 32000, 16, 4),
    "1B": (2048, 5632, 22, 32000, 32, 4),
    "70B-layer": (8192, 28672, 1, 128256, 64, 8),
}
SHARD_BYTES = 1 << 30
USE_GPU = False  # --device cuda: the children may see the GPU


@dataclass(frozen=True)
class Case:
    label: str
    method: str
    models: int  # fine-tunes (besides the base for ties)
    model_params: dict[str, float]
    params: dict[str, Any]
    mergekit: bool = True  # run mergekit too (False: known to run out of memory here)
    default: bool = True  # run when --cases is not given
    random: bool = False  # draws random masks: mergekit's global RNG, lossless's per-tensor seeds


CASES = {
    "seed-ties": Case(
        "TIES base + 3, density 1, normalize, int8_mask (the seed's shape)",
        "ties",
        3,
        {"weight": 1.0, "density": 1.0},
        {"normalize": True, "int8_mask": True},
    ),
    "ties": Case(
        "TIES base + 3, density 0.5, weight 0.5",
        "ties",
        3,
        {"weight": 0.5, "density": 0.5},
        {"normalize": True},
    ),
    "linear": Case("linear of 3", "linear", 3, {"weight": 1.0}, {}),
    # not in the three: `--cases della`
    "della": Case(
        "DELLA base + 2, density 0.5, epsilon 0.15",
        "della",
        2,
        {"weight": 0.5, "density": 0.5, "epsilon": 0.15},
        {"normalize": True},
        default=False,
        random=True,
    ),
}
# the 70B-layer preset: two fine-tunes; mergekit's TIES was killed at 23 GiB on this machine
CASES_70B = {
    "linear": Case("linear of 2", "linear", 2, {"weight": 1.0}, {}),
    "ties": Case(
        "TIES of 2 on a base, density 0.5",
        "ties",
        2,
        {"weight": 1.0, "density": 0.5},
        {"normalize": True},
        mergekit=False,
    ),
}


def llama_shapes(size: str) -> list[tuple[str, tuple[int, ...]]]:
    hidden, inter, layers, vocab, heads, kv_heads = SIZES[size]
    kv = kv_heads * (hidden // heads)
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


def llama_config(size: str) -> dict[str, Any]:
    hidden, inter, layers, vocab, heads, kv_heads = SIZES[size]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def write_checkpoint(path: Path, size: str, seed: int) -> None:
    """bf16 random weights saved shard by shard (never the whole model in memory)."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    total = 0
    for name, shape in llama_shapes(size):
        nbytes = 2 * math.prod(shape)
        if groups[-1] and total + nbytes > SHARD_BYTES:
            groups.append([])
            total = 0
        groups[-1].append((name, shape))
        total += nbytes
    weight_map = {}
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: _random_bf16(s, gen) for n, s in group}
        save_file(tensors, str(path / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in tensors})
        del tensors
    index = {"metadata": {}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def _random_bf16(shape: tuple[int, ...], gen: Any) -> Any:
    """N(0, 0.02²) in bf16, drawn a row block at a time (no whole float32 copy)."""
    import torch

    out = torch.empty(shape, dtype=torch.bfloat16)
    step = max(1, (1 << 26) // max(1, math.prod(shape[1:])))
    for lo in range(0, shape[0], step):
        part = out[lo : lo + step]
        part.copy_(torch.randn(part.shape, generator=gen).mul_(0.02))
    return out


def write_config(path: Path, case: Case, dirs: list[Path]) -> None:
    """The mergekit YAML both tools run (JSON is YAML)."""
    models = dirs[1 : 1 + case.models]  # m0 is the base
    config: dict[str, Any] = {
        "models": [{"model": str(d), "parameters": case.model_params} for d in models],
        "merge_method": case.method,
        "dtype": "bfloat16",
    }
    if case.method in ("ties", "della"):
        config["base_model"] = str(dirs[0])
    if case.params:
        config["parameters"] = case.params
    path.write_text(json.dumps(config, indent=1))


FLOOR_CHILD = """
import sys, time, json
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
with open(out, "wb", buffering=0) as fh:
    while remaining:
        n = min(remaining, len(buf))
        fh.write(view[:n])
        remaining -= n
print(json.dumps({"seconds": time.perf_counter() - start, "read": read}))
"""


class ChildFailed(Exception):
    pass


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run `cmd`: (wall seconds, its own peak RSS in GiB, stdout). `os.wait4` gives that
    process's rusage alone. A failure raises ChildFailed (mergekit may run out of memory).
    The children may cache their bytecode, as an installed package has it (pip compiles
    mergekit's on install; an editable lossless under PYTHONDONTWRITEBYTECODE would compile
    its 110 modules from source at every start, 0.14 s here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not USE_GPU:  # a CPU benchmark: neither tool may find a GPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    out_file, err_file = cwd / "child.out", cwd / "child.err"
    with out_file.open("w") as out, err_file.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = "\n".join(err_file.read_text().strip().splitlines()[-5:])
        raise ChildFailed(f"{Path(cmd[0]).name} exited {proc.returncode}: {tail}")
    return wall, usage.ru_maxrss / 2**20, out_file.read_text()


def same_tensors(a: Path, b: Path) -> str:
    """'identical', or how the two outputs differ (names, then values)."""
    import torch
    from safetensors import safe_open

    def tensors(d: Path) -> dict[str, Path]:
        names: dict[str, Path] = {}
        for f in sorted(d.glob("*.safetensors")):
            with safe_open(str(f), "pt") as h:
                names.update({n: f for n in h.keys()})  # noqa: SIM118 (safe_open has no iter)
        return names

    left, right = tensors(a), tensors(b)
    if set(left) != set(right):
        return f"different tensors: {sorted(set(left) ^ set(right))[:3]}"
    differ, worst = 0, 0.0
    for name in left:
        with safe_open(str(left[name]), "pt") as x, safe_open(str(right[name]), "pt") as y:
            p, q = x.get_tensor(name), y.get_tensor(name)
        if p.dtype != q.dtype or not torch.equal(p, q):
            differ += 1
            worst = max(worst, float((p.float() - q.float()).abs().max()))
    return "identical" if not differ else f"{differ} tensors differ (max |diff| {worst:.3g})"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Result:
    wall: list[float]
    rss: list[float]


def in_child(*args: str) -> str:
    """Run this script's helper `args` in a fresh process: this one never imports torch, so
    the children it times start small (a forked child's peak RSS counts its parent's)."""
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def helper(argv: list[str]) -> None:
    """The work done in children: `--write-checkpoint DIR SIZE SEED`, `--compare A B`."""
    if argv[0] == "--write-checkpoint":
        write_checkpoint(Path(argv[1]), argv[2], int(argv[3]))
    else:
        print(same_tensors(Path(argv[1]), Path(argv[2])))


def main() -> None:
    if sys.argv[1:2] in (["--write-checkpoint"], ["--compare"]):
        helper(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="300M", help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--cases", default="", help="comma list of cases (default: all)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lossless-bench"))
    parser.add_argument("--mergekit", default=os.environ.get("MERGEKIT_YAML", ""))
    parser.add_argument("--mergekit-all", action="store_true", help="also cases known to OOM")
    parser.add_argument("--memory", default="", help="lossless --memory (4G); default: its own")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: lossless --device cuda beside mergekit-yaml --cuda",
    )
    args = parser.parse_args()
    lossless = [sys.executable, "-m", "lossless", "run", "-q", "--no-copy-tokenizer"]
    lossless += ["--device", args.device]
    if args.memory:
        lossless += ["--memory", args.memory]
    mergekit = [args.mergekit, "--no-copy-tokenizer", "--quiet"] if args.mergekit else None
    if args.device == "cuda":
        global USE_GPU
        USE_GPU = True
        if mergekit is not None:
            mergekit.append("--cuda")
    rows = []
    for size in args.sizes.split(","):
        shapes = llama_shapes(size)
        params = sum(math.prod(s) for _, s in shapes)
        root = args.dir / size
        cases = CASES_70B if size == "70B-layer" else CASES
        default = [name for name, case in cases.items() if case.default]
        chosen = [c for c in (args.cases.split(",") if args.cases else default) if c in cases]
        dirs = [root / f"m{i}" for i in range(1 + max(cases[c].models for c in chosen))]
        for i, d in enumerate(dirs):
            if not (d / "model.safetensors.index.json").is_file():
                print(f"writing {d} ({params / 1e6:.0f}M params, bf16)", flush=True)
                in_child("--write-checkpoint", str(d), size, str(i))
            (d / "config.json").write_text(json.dumps(llama_config(size)))
        for name in chosen:
            case = cases[name]
            work = root / f"case-{name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            with_base = case.method in ("ties", "della")
            inputs = dirs[: 1 + case.models] if with_base else dirs[1 : 1 + case.models]
            write_config(work / "config.yml", case, dirs)
            files = [str(f) for d in inputs for f in sorted(d.glob("*.safetensors"))]
            in_bytes = sum(os.path.getsize(f) for f in files)
            floor_cmd = [
                sys.executable,
                "-c",
                FLOOR_CHILD,
                str(work / "floor.bin"),
                str(2 * params),
                *files,
            ]
            timed([sys.executable, "-c", FLOOR_CHILD, str(work / "warm.bin"), "0", *files], work)
            results: dict[str, Result] = {"floor": Result([], []), "lossless": Result([], [])}
            run_mk = mergekit is not None and (case.mergekit or args.mergekit_all)
            if run_mk:
                results["mergekit"] = Result([], [])
            verdict = "not compared"
            for round_ in range(args.repeat):
                order = (
                    ["floor", "mergekit", "lossless"]
                    if round_ % 2 == 0
                    else ["floor", "lossless", "mergekit"]
                )
                for tool in order:
                    if tool not in results:
                        continue
                    out = work / f"out-{tool}"
                    shutil.rmtree(out, ignore_errors=True)
                    if tool == "floor":
                        cmd = floor_cmd
                    elif tool == "mergekit":
                        assert mergekit is not None
                        cmd = [mergekit[0], str(work / "config.yml"), str(out), *mergekit[1:]]
                    else:
                        cmd = [*lossless, str(work / "config.yml"), str(out)]
                    print(f"{size} {name}: {tool} (load {load()})", flush=True)
                    try:
                        wall, rss, stdout = timed(cmd, work)
                    except ChildFailed as failed:
                        print(f"  failed: {failed}", flush=True)
                        results.pop(tool)
                        continue
                    finally:  # its output's writeback is not the next command's to pay
                        os.sync()
                    if tool == "floor":
                        (work / "floor.bin").unlink(missing_ok=True)
                        wall = json.loads(stdout.strip().splitlines()[-1])["seconds"]
                    results[tool].wall.append(wall)
                    results[tool].rss.append(rss)
                    print(f"  {wall:.1f} s, peak RSS {rss:.2f} GiB", flush=True)
                if "mergekit" in results and "lossless" in results:
                    verdict = in_child(
                        "--compare", str(work / "out-lossless"), str(work / "out-mergekit")
                    )
                    if case.random and verdict != "identical":
                        verdict = "random masks differ (by design: per-tensor seeds)"
                for tool in ("mergekit", "lossless"):
                    shutil.rmtree(work / f"out-{tool}", ignore_errors=True)
            # the tools' median over the rounds; the floor's fastest (noise only slows it)
            med = {
                t: ((min if t == "floor" else statistics.median)(r.wall), max(r.rss))
                for t, r in results.items()
                if r.wall
            }
            rows.append((size, case, in_bytes, med, verdict, run_mk))
            print(f"  outputs: {verdict}", flush=True)
            shutil.rmtree(work, ignore_errors=True)
        if not args.keep:  # only this size's checkpoints: other sizes may be kept on purpose
            shutil.rmtree(root, ignore_errors=True)
    print_table(rows, mergekit is not None)


def print_table(rows: list[Any], with_mergekit: bool) -> None:
    print()
    print(
        "| size | merge | mergekit | lossless | lossless / mergekit | lossless / I/O floor "
        "| I/O floor | peak RSS mergekit / lossless | outputs |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, case, _, med, verdict, run_mk in rows:
        floor = med.get("floor", (math.nan, 0))[0]
        mine = med.get("lossless")
        theirs = med.get("mergekit")
        if theirs:
            mk, ratio, mk_rss = (
                f"{theirs[0]:.1f} s",
                f"{mine[0] / theirs[0]:.2f}" if mine else "-",
                f"{theirs[1]:.2f}",
            )
        else:
            why = (
                "failed"
                if run_mk
                else ("not run (OOM at 23 GiB before)" if with_mergekit else "not run")
            )
            mk, ratio, mk_rss = why, "-", "-"
        ll = f"{mine[0]:.1f} s" if mine else "failed"
        ll_rss = f"{mine[1]:.2f}" if mine else "-"
        vs_floor = f"{mine[0] / floor:.1f}×" if mine else "-"
        print(
            f"| {size} | {case.label} | {mk} | {ll} | {ratio} | {vs_floor} | {floor:.1f} s "
            f"| {mk_rss} / {ll_rss} GiB | {verdict} |"
        )


if __name__ == "__main__":
    main()
