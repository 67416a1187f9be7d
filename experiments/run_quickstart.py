"""Run recipes/quickstart.yaml (with its PROPOSED `generate:` section) using today's tool.

    python experiments/run_quickstart.py WORKDIR [--seed N] [--edit 'PY on r']

1. writes the recipe without `generate:` (replay refs to generate steps replaced by the file the
   step will write, WORKDIR/generate/NAME.jsonl) to recipes/_run_<seed>.yaml;
2. runs the tool up to each generate step's model (`--only MODEL`), then
   experiments/self_replay.py for the step;
3. runs the whole recipe; prints wall time and the eval table (retention, gain vs naive).
--seed N sets every train step's seed (and the generate step's) to N.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
ap = argparse.ArgumentParser(); ap.add_argument("work"); ap.add_argument("--seed", type=int); ap.add_argument("--edit", default=""); ap.add_argument("--name", default="")
a = ap.parse_args()
work = Path(a.work).resolve()
r = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
if a.seed is not None:
    for s in r["train"].values(): s["seed"] = a.seed
    for g in r.get("generate", {}).values(): g["seed"] = a.seed
exec(a.edit, {"r": r})
gens = r.pop("generate", {}) or {}
for name in gens:
    out = work / "generate" / f"{name}.jsonl"
    for s in r["train"].values():
        if isinstance(s.get("replay"), dict) and s["replay"].get("data") == name:
            s["replay"]["data"] = str(out)
path = ROOT / "recipes" / f"_run_{a.name or a.seed or 0}.yaml"
path.write_text(yaml.safe_dump(r, sort_keys=False))
env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # 1 thread: a 1M model gains nothing from more, and the 2 cores are shared
tool = ["nice", "-n", "10", sys.executable, "-m", "lossless", "run", str(path), str(work / "merged-out"), "--work-dir", str(work), "--quiet"]
t0 = time.perf_counter()
for name, g in gens.items():
    out = work / "generate" / f"{name}.jsonl"; out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():  # a placeholder so the recipe validates; replaced before it is read
        out.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " x"}]}) + "\n")
    subprocess.run(tool + ["--only", g["model"]], env=env, check=True)
    cmd = ["nice", "-n", "10", sys.executable, str(ROOT / "experiments/self_replay.py"), str(work / g["model"]), str(out),
           *(["--prompts", str(ROOT / "recipes" / g["prompts"])] if g.get("prompts") else ["--magpie", str(g["magpie"]), "--temperature", str(g.get("temperature", 1.0))]),
           "--samples", str(g.get("samples", 0)),
           *(["--exclude", *[str(ROOT / "recipes" / f) for f in g["exclude"]]] if g.get("exclude") else []),
           "--seed", str(g.get("seed", 0)), "--max-new-tokens", str(g.get("max_new_tokens", 16))]
    print(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
p = subprocess.run(tool, env=env, capture_output=True, text=True)
wall = time.perf_counter() - t0
if p.returncode not in (0, 1):
    print(p.stdout[-3000:], p.stderr[-3000:]); sys.exit(1)
res = json.loads((work / "forgetting" / "eval.json").read_text())["scores"]
gate = json.loads((work / "gate" / "eval.json").read_text())["gates"]
steps = {d.name: json.loads((d / "metrics.json").read_text()).get("wall_seconds") for d in work.iterdir() if (d / "metrics.json").exists()}
ref = res["instruct"]
val = lambda d, k: d[k]["exact_match"] if d[k].get("exact_match") is not None else d[k]["loss"]
ng = val(res["naive"], "C") - val(ref, "C")
summary = {"seed": a.seed, "wall_s": round(wall, 1), "train_wall_s": steps, "gate_passed": gate["passed"], "models": {}}
print(f"== seed {a.seed} wall {wall:.0f}s  train steps {steps}  gate {'passed' if gate['passed'] else 'BREACHED'}")
for m, d in res.items():
    row = {"P_loss": d["P"]["loss"], "P_ret": ref["P"]["loss"] / d["P"]["loss"], "A": val(d, "A"), "B": val(d, "B"), "C": val(d, "C"),
           "A_ret": val(d, "A") / val(ref, "A"), "B_ret": val(d, "B") / val(ref, "B"), "C_gain_vs_naive": (val(d, "C") - val(ref, "C")) / ng}
    summary["models"][m] = row
    print(f"  {m:10s} P {row['P_loss']:.3f} ({100*row['P_ret']:.0f}%)  A {row['A']:.3f} ({100*row['A_ret']:.0f}%)  B {row['B']:.3f} ({100*row['B_ret']:.0f}%)  C {row['C']:.3f} (gain {100*row['C_gain_vs_naive']:.0f}% of naive)")
(work / "summary.json").write_text(json.dumps(summary, indent=1))
