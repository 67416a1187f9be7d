"""Run a variant of recipes/quickstart.yaml through the tool and print its table.

    python experiments/run_variant.py NAME WORKDIR 'PY-EXPR editing r'   (r = the recipe dict)
The variant recipe is written to recipes/_exp_NAME.yaml (untracked) so data paths resolve the same."""
import json, subprocess, sys, time, os
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
name, work, edit = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
r = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
r.pop("generate", None)  # PROPOSED section: its file for seed 0 is experiments/gen/sr_w4.jsonl
r["train"]["new_skill"]["replay"]["data"] = "../experiments/gen/sr_w4.jsonl"
exec(edit, {"r": r})
path = ROOT / "recipes" / f"_exp_{name}.yaml"
path.write_text(yaml.safe_dump(r, sort_keys=False))
t = time.perf_counter()
env = dict(os.environ, PYTHONPATH=str(ROOT))
p = subprocess.run(["nice", "-n", "10", sys.executable, "-m", "lossless", "run", str(path), str(Path(work).resolve() / "merged-out"), "--work-dir", work, "--quiet"], env=env, capture_output=True, text=True)
wall = time.perf_counter() - t
if p.returncode not in (0, 1):
    print(p.stdout[-3000:], p.stderr[-3000:]); sys.exit(1)
ev = [s for s in r["eval"] if s != "gate"][0]
res = json.loads((Path(work) / ev / "eval.json").read_text())["scores"]
ref = res["instruct"]
def val(d, k): return d[k]["exact_match"] if d[k].get("exact_match") is not None else d[k]["loss"]
naive = res.get("naive")
print(f"== {name}  wall {wall:.0f}s")
for m, d in res.items():
    parts = [f"P {d['P']['loss']:.3f} ({100*ref['P']['loss']/d['P']['loss']:.0f}%)"]
    for k in "AB":
        parts.append(f"{k} {val(d,k):.3f} ({100*val(d,k)/max(val(ref,k),1e-9):.0f}%)")
    gain = val(d, "C") - val(ref, "C")
    ng = (val(naive, "C") - val(ref, "C")) if naive else float("nan")
    parts.append(f"C {val(d,'C'):.3f} (gain {100*gain/ng if ng else float('nan'):.0f}% of naive)")
    print(f"  {m:14s} " + "  ".join(parts))
