"""Probe a model's raw (pretraining-format) skills: greedy completion of the plain-text operations.
python experiments/probe.py MODEL_DIR [DATA_DIR]"""
import json, sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(1)
model_dir = Path(sys.argv[1]); data = Path(sys.argv[2] if len(sys.argv) > 2 else "recipes/quickstart/data")
tok = AutoTokenizer.from_pretrained(model_dir); model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

def rows(name):
    return [json.loads(l) for l in (data / name).read_text().splitlines()]

def prompts(skill):
    out = []
    for r in rows(f"{skill}_heldout.jsonl"):
        u, a = r["messages"][0]["content"], r["messages"][1]["content"]
        args = u.split(": ", 1)[1]
        if skill == "a": out.append((f"the last of {args} is", a))
        elif skill == "b": out.append((f"{args} swapped is", a))
        else: out.append((f"after {args} comes", a))
    return out

def greedy(texts, n=4):
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return [tok.decode(o[enc["input_ids"].shape[1]:], skip_special_tokens=True) for o in out]

for skill in "abc":
    ps = prompts(skill)
    said = greedy([p for p, _ in ps], 4)
    ok = sum(s.split()[: len(a.split())] == a.split() for s, (_, a) in zip(said, ps))
    print(skill, "raw-text accuracy", ok / len(ps), "e.g.", ps[0][0], "->", repr(said[0]))
