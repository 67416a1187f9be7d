"""Merging models whose vocabularies differ, at Llama-3-70B's embedding size, under a budget.

    python benchmarks/merge_vocab.py                     # 128256 × 8192 embeddings, --memory 4G
    python benchmarks/merge_vocab.py --vocab 32000 --hidden 1024    # smaller and quicker
    python benchmarks/merge_vocab.py --root ../other-checkout       # another lossless beside

Writes two bf16 Llama-shaped checkpoints with one small decoder layer and Llama-3-70B's
embedding and lm_head (128256 × 8192, 2 GiB each in bf16), each with a word-level tokenizer of
`--vocab` tokens; the second has `--extra` tokens the first lacks (a chat fine-tune's added
tokens). Then runs, in a fresh process whose own peak RSS is taken from `os.wait4`:

    lossless run config.yml out --memory 4G     (linear of the two, tokenizer_source: union)

and prints the wall time and peak RSS. Every embedding row is re-indexed to the union's ids
(merge/vocab_rows.py). `--root` runs the lossless of another checkout (an older commit) on the
same checkpoints, one after the other. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import merge as merge_bench  # noqa: E402
from benchmarks.merge import llama_config, write_checkpoint  # noqa: E402


def write_tokenizer(path: Path, words: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=words[0]).save_pretrained(path)


def prepare(root: Path, vocab: int, hidden: int, extra: int) -> list[Path]:
    size = f"vocab-{vocab}x{hidden}"
    merge_bench.SIZES[size] = (hidden, 1024, 1, vocab, max(1, hidden // 128), 1)
    dirs = [root / size / "a", root / size / "b"]
    shared = [f"w{i}" for i in range(vocab - extra)]
    words = [shared + [f"a{i}" for i in range(extra)], shared + [f"chat{i}" for i in range(extra)]]
    for i, d in enumerate(dirs):
        if not (d / "model.safetensors.index.json").is_file():
            print(f"writing {d}", flush=True)
            write_checkpoint(d, size, i)
        (d / "config.json").write_text(json.dumps(llama_config(size)))
        write_tokenizer(d, words[i])
    return dirs


def run(root: Path, config: Path, out: Path, memory: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "lossless", "run", "-q", str(config), str(out), "--memory", memory]
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=config.parent, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        assert proc.stderr is not None
        why = "killed (out of memory?)" if code < 0 else f"exit {code}"
        print(f"{root}: lossless failed, {why}: {proc.stderr.read().decode()[-500:]}")
        return wall, math.nan
    shutil.rmtree(out, ignore_errors=True)
    return wall, usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--extra", type=int, default=16, help="tokens only the second model has")
    parser.add_argument("--memory", default="4G")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lossless-bench"))
    parser.add_argument("--root", type=Path, action="append", default=[], help="other checkouts")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    args = parser.parse_args()
    a, b = prepare(args.dir, args.vocab, args.hidden, args.extra)
    config = a.parent / "config.yml"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {"model": str(a), "parameters": {"weight": 0.5}},
                    {"model": str(b), "parameters": {"weight": 0.5}},
                ],
                "merge_method": "linear",
                "tokenizer_source": "union",
                "dtype": "bfloat16",
            }
        )
    )
    print(f"| lossless | wall | peak RSS (--memory {args.memory}) |\n|---|---|---|")
    for root in [ROOT, *args.root]:
        wall, rss = run(root, config, a.parent / "out", args.memory)
        print(f"| {root} | {wall:.1f} s | {rss:.2f} GiB |", flush=True)
    if not args.keep:
        shutil.rmtree(a.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
