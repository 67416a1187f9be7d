"""Merge-search prototype: TARGET + α·(LoRA Δ), scored on held-out P/A/B/C with the tool's metrics.

    python experiments/merge_search.py TARGET_DIR ADAPTER_DIR REFERENCE_DIR --alphas 0.5 1 1.5
Rule (the proposed `search:`): among the candidates, the largest C exact match subject to every
old skill within 2 % of the reference (exact match for A/B, loss for P); ties → smaller α."""
import argparse, json
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from lossless.data import load_rows, to_examples, detect_format
from lossless.evaluation.metrics import score_examples

ap = argparse.ArgumentParser(); ap.add_argument("target"); ap.add_argument("adapter"); ap.add_argument("reference")
ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 1.5]); ap.add_argument("--tolerance", type=float, default=0.02)
a = ap.parse_args()
torch.set_num_threads(1)
import sys; sys.path.insert(0, str(Path(__file__).parent))
from weights import lora_delta  # noqa: E402  (module prints nothing when argv is ours)
DATA = Path(__file__).resolve().parents[1] / "recipes/quickstart/data"
sets = {"P": "p_heldout.txt", "A": "a_heldout.jsonl", "B": "b_heldout.jsonl", "C": "c_heldout.jsonl"}
tok = AutoTokenizer.from_pretrained(a.reference)
exs = {}
for k, f in sets.items():
    rows = load_rows(DATA / f); fmt = detect_format(rows, str(f)); exs[k] = to_examples(rows, fmt, tok, "chatml")

def score(model):
    out = {}
    for k, ex in exs.items():
        s = score_examples(model, tok, ex, batch_size=100, max_new_tokens=8)
        out[k] = s["loss"] if k == "P" else s["exact_match"]
    return out

ref = score(AutoModelForCausalLM.from_pretrained(a.reference).eval())
print("reference", ref)
delta = lora_delta(a.adapter)
rows = []
for alpha in a.alphas:
    m = AutoModelForCausalLM.from_pretrained(a.target).eval()
    sd = m.state_dict()
    with torch.no_grad():
        for n, d in delta.items():
            sd[n] += alpha * d
    s = score(m)
    ok = s["P"] <= ref["P"] * (1 + a.tolerance) and all(s[k] >= ref[k] * (1 - a.tolerance) for k in "AB")
    rows.append((alpha, s, ok)); print(f"alpha {alpha}: {s} within {a.tolerance:.0%}: {ok}")
best = max((r for r in rows if r[2]), key=lambda r: (r[1]["C"], -r[0]), default=None)
print("chosen", best)
