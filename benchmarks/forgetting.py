"""Forgetting benchmark: the quickstart's tiny world, several seeds, every way to add skill C.

    python benchmarks/forgetting.py                      # seeds 0 1 2, every variant (~30 min)
    python benchmarks/forgetting.py --seeds 0 --quick    # a smoke run, not figures

For each seed it builds the world once (`base` knows P; `instruct` also answers A and B; the
runner's cache shares them between variants, whose recipes use one work dir per seed), then adds
the new skill C in each of these ways, and measures held-out P (loss), A, B, C (exact match):

  variant             old data?  what it does
  naive               no         full fine-tune of instruct on C
  replay              yes        naive + 20 % of the real A/B training rows mixed in
  ewc                 yes        naive + an EWC penalty computed on the real A/B rows
  freeze              no         naive with the first layer frozen
  lora-instruct       no         a LoRA on instruct, applied, no rehearsal
  seed-ties           no         the seed recipe: a LoRA on *base* → applied to instruct → TIES
                                 with base as reference (weights 1/1, density 1, normalize)
  self-replay         no         a LoRA on instruct rehearsing instruct's own answers to fresh
                                 prompts (`generate:`), TIES-merged onto instruct
  self-replay+kl      no         the same plus distillation to instruct on the rehearsal rows:
                                 the quickstart's recipe
  self-replay+kl+search  no      the same, the LoRA's merge weight searched (0.75 / 1 / 1.25)
                                 keeping P, A and B within 2 % of instruct

Retention = the model's score / instruct's (exact match; for P, instruct's loss / the model's).
Gain on C = (model − instruct) / (naive − instruct), exact match. Wall time is the variant's own
steps (the first variant of a seed also builds the world). Prints the table as markdown and
writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
AB = ["quickstart/data/a_train.jsonl", "quickstart/data/b_train.jsonl"]
OLD_DATA = {"replay", "ewc"}


def quickstart() -> dict[str, Any]:
    return yaml.safe_load(QUICKSTART.read_text())


def reseeded(step: dict[str, Any], seed: int, quick: bool) -> dict[str, Any]:
    step = {**step, "seed": seed}
    if quick:
        step["epochs"] = max(1, int(step.get("epochs", 1)) // 4)
    return step


def variants(seed: int, quick: bool) -> dict[str, dict[str, Any]]:
    """Variant name → recipe; every recipe has the world's steps, so the cache trains them once."""
    qs = quickstart()
    train = qs["train"]
    world = {k: reseeded(train[k], seed, quick) for k in ("base", "instruct")}
    naive = reseeded(train["naive"], seed, quick)
    lora = reseeded(train["new_skill"], seed, quick)
    plain_lora = {k: v for k, v in lora.items() if k not in ("replay", "distill")}
    on_base = {
        **plain_lora,
        "base": "base",
        "learning_rate": 2.0e-3,
        "epochs": 1 if quick else 8,
        "replay": {"data": "quickstart/data/p_chat_train.jsonl", "fraction": 0.3},
    }
    rehearsal = {"rehearsal": {**qs["generate"]["rehearsal"], "seed": seed}}
    onto_instruct = {
        "models": [{"model": "adapted", "parameters": {"weight": 1.0, "density": 1.0}}],
        "merge_method": "ties",
        "base_model": "instruct",
        "parameters": {"normalize": True},
        "dtype": "float32",
    }
    forgetting = qs["eval"]["forgetting"]

    def recipe(steps: dict, model: str, **rest: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"train": {**world, **steps}, **rest}
        out["eval"] = {"forgetting": {**forgetting, "models": ["instruct", model]}}
        return out

    adapted = {"apply": {"adapted": {"adapter": "new_skill", "to": "instruct"}}}
    search = {
        "vary": {"models[0].parameters.weight": {"choices": [0.75, 1.0, 1.25]}},
        "eval": "forgetting",
        "objective": {"dataset": "C", "metric": "exact_match", "goal": "maximize"},
        "constraints": {
            "P": {"metric": "loss", "max_regression": 0.02},
            "A": {"metric": "exact_match", "max_regression": 0.02},
            "B": {"metric": "exact_match", "max_regression": 0.02},
        },
    }
    return {
        "naive": recipe({"naive": naive}, "naive"),
        "replay": recipe(
            {"naive_replay": {**naive, "replay": {"data": AB, "fraction": 0.2}}}, "naive_replay"
        ),
        "ewc": recipe(
            {"naive_ewc": {**naive, "ewc": {"data": AB, "lambda": 50.0, "samples": 64}}},
            "naive_ewc",
        ),
        "freeze": recipe(
            {"naive_freeze": {**naive, "freeze": {"first_layers": 1}}}, "naive_freeze"
        ),
        "lora-instruct": recipe({"new_skill": plain_lora}, "adapted", **adapted),
        "seed-ties": recipe(
            {"lora_on_base": on_base},
            "merged",
            apply={"adapted": {"adapter": "lora_on_base", "to": "instruct"}},
            models=[
                {"model": "adapted", "parameters": {"weight": 1.0, "density": 1.0}},
                {"model": "instruct", "parameters": {"weight": 1.0, "density": 1.0}},
            ],
            merge_method="ties",
            base_model="base",
            parameters={"normalize": True},
            dtype="float32",
        ),
        "self-replay": recipe(
            {"new_skill": {**lora, "distill": None}},
            "merged",
            generate=rehearsal,
            **adapted,
            **onto_instruct,
        ),
        "self-replay+kl": recipe(
            {"new_skill": lora}, "merged", generate=rehearsal, **adapted, **onto_instruct
        ),
        "self-replay+kl+search": recipe(
            {"new_skill": lora},
            "merged",
            generate=rehearsal,
            **adapted,
            # normalize would divide a single model's weight out; the search varies it
            **{**onto_instruct, "parameters": {"normalize": False}},
            search=search,
        ),
    }


def clean(recipe: dict[str, Any]) -> dict[str, Any]:
    """Drop keys set to None (a variant that removes a setting of the quickstart's step)."""
    if isinstance(recipe, dict):
        return {k: clean(v) for k, v in recipe.items() if v is not None}
    return recipe


def run_variant(recipe: dict, path: Path, work_dir: Path) -> tuple[dict, float]:
    from lossless.engine.runner import Runner, RunOptions
    from lossless.validation.recipe_check import load_recipe

    path.write_text(yaml.safe_dump(clean(recipe), sort_keys=False))
    loaded, _ = load_recipe(path)
    started = time.perf_counter()
    Runner(loaded, RunOptions(work_dir=work_dir, quiet=True, write_lock=False)).run()
    elapsed = time.perf_counter() - started
    return json.loads((work_dir / "forgetting" / "eval.json").read_text()), elapsed


def score(results: dict, model: str, dataset: str, metric: str) -> float:
    value = results["scores"][model][dataset][metric]
    return float("nan") if value is None else float(value)


def row(results: dict, model: str, naive_c: float) -> dict[str, float]:
    ref = "instruct"
    c_ref = score(results, ref, "C", "exact_match")
    return {
        "P": score(results, ref, "P", "loss") / score(results, model, "P", "loss"),
        "A": score(results, model, "A", "exact_match") / score(results, ref, "A", "exact_match"),
        "B": score(results, model, "B", "exact_match") / score(results, ref, "B", "exact_match"),
        "C": score(results, model, "C", "exact_match"),
        "gain": (score(results, model, "C", "exact_match") - c_ref) / max(naive_c - c_ref, 1e-9),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", help="run these variants (naive always runs)")
    parser.add_argument("--quick", action="store_true", help="fewer epochs: a smoke test")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "forgetting.md"
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".lossless-bench")
    args = parser.parse_args(argv)

    from lossless.errors import LosslessError

    rows: dict[str, list[dict[str, float]]] = {}
    failed: dict[str, list[int]] = {}
    for seed in args.seeds:
        naive_c = 0.0
        for name, recipe in variants(seed, args.quick).items():
            if args.only and name != "naive" and name not in args.only:
                continue
            path = ROOT / "recipes" / f".bench-{name}-{seed}.yaml"  # beside the data it reads
            try:
                results, elapsed = run_variant(recipe, path, args.work_dir / f"seed{seed}")
            except LosslessError as error:  # e.g. a search with no feasible trial: say so
                failed.setdefault(name, []).append(seed)
                print(f"seed {seed} {name}: {error.message.splitlines()[0]}", file=sys.stderr)
                continue
            finally:
                path.unlink(missing_ok=True)
            model = recipe["eval"]["forgetting"]["models"][-1]
            if name == "naive":
                naive_c = score(results, model, "C", "exact_match")
            measured = {**row(results, model, naive_c), "time": elapsed}
            rows.setdefault(name, []).append(measured)
            print(
                f"seed {seed} {name:22s} " + "  ".join(f"{k}={v:.3f}" for k, v in measured.items()),
                file=sys.stderr,
            )

    def cell(values: list[float], pct: bool = True) -> str:
        mean = statistics.mean(values)
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        return f"{mean:.0%} ± {spread:.0%}" if pct else f"{mean:.0f}"

    lines = [
        f"Seeds {', '.join(map(str, args.seeds))}{' (quick)' if args.quick else ''}; mean ± spread. "
        "Retention vs instruct (P by loss, A/B by exact match); gain on C vs naive's gain.",
        "",
        "| variant | old data? | P kept | A kept | B kept | C exact | C gain | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, values in rows.items():
        cells = [cell([v[k] for v in values]) for k in ("P", "A", "B")]
        cells.append(f"{statistics.mean(v['C'] for v in values):.2f}")
        cells.append(cell([v["gain"] for v in values]))
        note = f" (failed on seed {', '.join(map(str, failed[name]))})" if name in failed else ""
        lines.append(
            f"| {name}{note} | {'yes' if name in OLD_DATA else 'no'} | "
            + " | ".join(cells)
            + f" | {cell([v['time'] for v in values], pct=False)} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
