"""A lossless train step against a plain trl SFTTrainer script: same tiny Llama, data and steps.

    /work/main/.venv/bin/python benchmarks/train.py              # 120 LoRA steps
    /work/main/.venv/bin/python benchmarks/train.py --steps 30   # a quick smoke run

Both train a rank-8 all-linear LoRA on prompt/completion rows (loss on the completion), batch 4,
max length 512, on one torch thread (what lossless picks for a model under 20M parameters; the
plain script is given the same, so the comparison is of the training code, not the thread count).
Each case runs in a fresh subprocess, so its peak RSS is its own; the clock covers the whole
step as a user waits for it (model load, data, training, save). Prints tokens per second and
peak RSS for each and the ratio lossless / trl (goal >= 1.0 for tokens per second). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from children import run_child

ROWS = [{"prompt": f"add {i} and {i + 3}:", "completion": f" {2 * i + 3}"} for i in range(256)]

PREPARE = """
import json, sys
from pathlib import Path
from tests.factories import make_model, write_jsonl
root = Path(sys.argv[1])
make_model(root / "base", layers=2, hidden_size=64, intermediate_size=128)
write_jsonl(root / "data.jsonl", json.loads(sys.argv[2]))
print(json.dumps({}))
"""

LOSSLESS = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from lossless.recipe.build import build_train
from lossless.steps.train import run_train
root, steps = Path(sys.argv[1]), int(sys.argv[2])
block = {"method": "lora", "data": "data.jsonl", "max_steps": steps, "batch_size": 4,
         "learning_rate": 2e-4, "lora": {"r": 8, "alpha": 16}, "max_seq_length": 512,
         "save_steps": 10_000}
m = run_train(build_train("b", block), base_dir=root / "base", out_dir=root / "lossless",
              recipe_dir=root, quiet=True)
print(json.dumps({"seconds": time.perf_counter() - t0, "train_seconds": m["wall_seconds"]}))
"""

TRL = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
root, steps = Path(sys.argv[1]), int(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(root / "base")
model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
data = load_dataset("json", data_files=str(root / "data.jsonl"), split="train")
args = SFTConfig(output_dir=str(root / "trl"), max_steps=steps, per_device_train_batch_size=4,
                 learning_rate=2e-4, lr_scheduler_type="cosine", max_length=512,
                 logging_steps=1, save_steps=10_000, report_to="none", disable_tqdm=True,
                 use_cpu=True, seed=0)
lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                     peft_config=lora)
t1 = time.perf_counter()
trainer.train()
t2 = time.perf_counter()
trainer.model.save_pretrained(root / "trl")
print(json.dumps({"seconds": time.perf_counter() - t0, "train_seconds": t2 - t1}))
"""


def tokens_seen(root: Path, steps: int, batch: int) -> int:
    """Tokens the steps feed the model: each row is prompt + completion + eos, cycled in order."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "base")
    sizes = [
        len(tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) + 1
        for r in ROWS
    ]
    return sum(sizes[i % len(sizes)] for i in range(steps * batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_child(PREPARE, [str(root), json.dumps(ROWS)])
        tokens = tokens_seen(root, args.steps, 4)
        results = {}
        for name, code in (("trl", TRL), ("lossless", LOSSLESS)):
            figures, rss = run_child(code, [str(root), str(args.steps)])
            results[name] = (tokens / figures["seconds"], rss, figures)
    print(f"{args.steps} LoRA steps, batch 4, {tokens} tokens, tiny Llama (2 layers, hidden 64)")
    print(f"{'case':<10} {'tokens/s':>10} {'step s':>8} {'train s':>8} {'peak RSS GiB':>13}")
    for name, (tps, rss, f) in results.items():
        print(
            f"{name:<10} {tps:>10.0f} {f['seconds']:>8.2f} {f['train_seconds']:>8.2f} {rss:>13.3f}"
        )
    (l_tps, l_rss, _), (t_tps, t_rss, _) = results["lossless"], results["trl"]
    print(
        f"ratio lossless/trl: tokens/s {l_tps / t_tps:.2f} (goal >= 1.0), peak RSS {l_rss / t_rss:.2f}"
    )


if __name__ == "__main__":
    main()
