"""Forgetting benchmark: the quickstart's tiny world, several seeds, every way to add skill C.

    python benchmarks/forgetting.py --seeds 0 1 2 [--quick] [--out benchmarks/results/forgetting.md]

For each seed it builds the world once (base model with skill P, instruct model with A and B; the
runner's cache shares them between variants), then adds the new skill C in each way the
continual-learning literature discusses and measures held-out exact match (A, B, C) and loss (P):

  naive          full fine-tune of the instruct model on C
  lora-instruct  LoRA trained on the instruct model, merged into it
  lora-applied   LoRA trained on the base, applied to the instruct model, no merge
  ties-dX        the lossless method: LoRA on base → applied to instruct → TIES with the base
                 as reference, at density X
  replay         naive + 20% of A/B examples mixed into C's training
  freeze         naive with the first half of the layers frozen
  ewc            naive with an EWC penalty computed on A/B

It prints a table (retention of P/A/B against the instruct model, acquisition of C, wall time) and
writes it as markdown. Retention = score / instruct's score (exact match; for P, instruct's loss /
the model's loss). Acquisition of C = exact match on held-out C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def world(seed: int, quick: bool) -> dict:
    """The quickstart recipe's train steps for `base` and `instruct`, reseeded."""
    recipe = yaml.safe_load(QUICKSTART.read_text())
    train = {k: recipe["train"][k] for k in ("base", "instruct")}
    for step in train.values():
        step["seed"] = seed
        if quick:
            step["epochs"] = max(1, step["epochs"] // 3)
    return train


def lora_step(
    base: str, seed: int, quick: bool, data: str = "quickstart/data/c_train.jsonl"
) -> dict:
    step = yaml.safe_load(QUICKSTART.read_text())["train"]["new_skill"]
    replay = step.get("replay") or {}
    if not Path(str(replay.get("data", ""))).suffix:  # a generate step (the quickstart's
        step.pop("replay", None)  # self-replay, issue 13): not something this benchmark runs yet
    if base == "base":  # the LoRA-on-base route, with the settings it was measured with
        step.update(
            learning_rate=2.0e-3,
            epochs=8,
            replay={"data": "quickstart/data/p_chat_train.jsonl", "fraction": 0.3},
        )
    step.update(base=base, seed=seed, data=data)
    if quick:
        step["epochs"] = 1
    return step


def naive_step(seed: int, quick: bool, **extra: object) -> dict:
    step = yaml.safe_load(QUICKSTART.read_text())["train"]["naive"]
    step.update(seed=seed, **extra)
    if quick:
        step["epochs"] = 1
    return step


def eval_block(models: list[str]) -> dict:
    block = yaml.safe_load(QUICKSTART.read_text())["eval"]["forgetting"]
    block["models"] = models
    block.pop("gate", None)
    return {"forgetting": block}


def variants(seed: int, quick: bool, densities: list[float]) -> dict[str, dict]:
    """variant name → recipe (all share the world's steps, so the cache trains them once)."""
    out: dict[str, dict] = {}
    base_world = world(seed, quick)
    ab = ["quickstart/data/a_train.jsonl", "quickstart/data/b_train.jsonl"]

    def with_world(extra_train: dict, rest: dict, model: str) -> dict:
        recipe = {"train": {**base_world, **extra_train}, **rest}
        recipe["eval"] = eval_block(["instruct", model])
        return recipe

    out["naive"] = with_world({"naive": naive_step(seed, quick)}, {}, "naive")
    out["replay"] = with_world(
        {"naive_replay": naive_step(seed, quick, replay={"data": ab, "fraction": 0.2})},
        {},
        "naive_replay",
    )
    out["freeze"] = with_world(
        {"naive_freeze": naive_step(seed, quick, freeze={"first_layers": 1})}, {}, "naive_freeze"
    )
    out["ewc"] = with_world(
        {"naive_ewc": naive_step(seed, quick, ewc={"data": ab, "lambda": 50.0, "samples": 64})},
        {},
        "naive_ewc",
    )
    out["lora-instruct"] = with_world(
        {"lora_on_instruct": lora_step("instruct", seed, quick)},
        {"apply": {"lora_instruct_applied": {"adapter": "lora_on_instruct", "to": "instruct"}}},
        "lora_instruct_applied",
    )
    on_base = {"new_skill": lora_step("base", seed, quick)}
    out["lora-applied"] = with_world(
        on_base, {"apply": {"adapted": {"adapter": "new_skill", "to": "instruct"}}}, "adapted"
    )
    for density in densities:
        name = f"ties-d{density:g}"
        merge = {
            "name": "merged",
            "models": [
                {"model": "adapted", "parameters": {"weight": 1.0, "density": density}},
                {"model": "instruct", "parameters": {"weight": 1.0, "density": density}},
            ],
            "merge_method": "ties",
            "base_model": "base",
            "parameters": {"normalize": True},
            "dtype": "float32",
        }
        out[name] = with_world(
            on_base,
            {"apply": {"adapted": {"adapter": "new_skill", "to": "instruct"}}, **merge},
            "merged",
        )
    return out


def run_variant(recipe: dict, path: Path, work_dir: Path) -> tuple[dict, float]:
    from lossless.engine.runner import Runner, RunOptions
    from lossless.validation.recipe_check import load_recipe

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    loaded, _ = load_recipe(path)
    started = time.perf_counter()
    Runner(loaded, RunOptions(work_dir=work_dir, quiet=True, write_lock=False)).run()
    elapsed = time.perf_counter() - started
    results = json.loads((work_dir / "forgetting" / "eval.json").read_text())
    return results, elapsed


def score(results: dict, model: str, dataset: str) -> float:
    entry = results["scores"][model][dataset]
    return entry["exact_match"] if entry.get("exact_match") is not None else entry["loss"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.2])
    parser.add_argument(
        "--quick", action="store_true", help="fewer epochs: a smoke test, not figures"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "forgetting.md"
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".lossless-bench")
    args = parser.parse_args(argv)

    rows: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        for name, recipe in variants(seed, args.quick, args.densities).items():
            path = ROOT / "recipes" / f".bench-{name}-{seed}.yaml"  # beside the data paths it uses
            try:
                results, elapsed = run_variant(recipe, path, args.work_dir / f"seed{seed}")
            finally:
                path.unlink(missing_ok=True)
            model = recipe["eval"]["forgetting"]["models"][-1]
            ref = "instruct"
            row = {
                "P": score(results, ref, "P") / max(score(results, model, "P"), 1e-9),
                "A": score(results, model, "A") / max(score(results, ref, "A"), 1e-9),
                "B": score(results, model, "B") / max(score(results, ref, "B"), 1e-9),
                "C": score(results, model, "C"),
                "time": elapsed,
            }
            rows.setdefault(name, []).append(row)
            print(
                f"seed {seed} {name:14s} " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()),
                file=sys.stderr,
            )

    def cell(values: list[float], pct: bool) -> str:
        mean = statistics.mean(values)
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        return f"{mean:.0%} ± {spread:.0%}" if pct else f"{mean:.1f}"

    lines = [
        f"Seeds: {', '.join(map(str, args.seeds))}{' (quick)' if args.quick else ''}. "
        "Retention vs the instruct model (P by loss, A/B by exact match); C = exact match on held-out C.",
        "",
        "| variant | P retained | A retained | B retained | C acquired | wall s (first variant includes building the world) |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in rows.items():
        cells = [cell([v[k] for v in values], pct=True) for k in ("P", "A", "B", "C")]
        lines.append(
            f"| {name} | "
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
