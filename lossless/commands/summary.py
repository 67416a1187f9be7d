"""The end-of-run summary of `lossless run`: where the result is, how big, how long, the gates.

    run finished in 3m12s: 4 steps (2 ran, 2 fresh)
      output  ./out/qwen2-merged (988.1 MB)
      gates   eval forgetting: passed
      share   lossless push recipe.yaml org/name    (or, after `push_to_hub:` uploads:)
      pushed  merged → org/name: https://huggingface.co/org/name/commit/...

Built from the runner's step statuses and the eval steps' `eval.json`, after the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossless.recipe.model import EvalStep


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_time(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def summary_lines(runner: Any, results: Sequence[Any] | None, seconds: float) -> list[str]:
    """`results`: the runner's statuses, or None when the run stopped at a failed gate."""
    from lossless.engine.runner import final_merge

    recipe = runner.recipe
    if results is None:
        head = f"run stopped after {human_time(seconds)}: a gate failed"
    else:
        ran = sum(1 for r in results if r.state == "ran")
        fresh = sum(1 for r in results if r.state == "fresh")
        head = f"run finished in {human_time(seconds)}: {len(results)} steps ({ran} ran, {fresh} fresh)"
    lines = [head]
    final = final_merge(recipe)
    if final is not None and final.name in runner.resolver.step_dirs:
        out = Path(runner.resolver.step_dirs[final.name])
        lines.append(f"  output  {out} ({human_size(directory_size(out))})")
    for step in recipe.steps:
        if not isinstance(step, EvalStep) or step.name not in runner.resolver.step_dirs:
            continue
        path = Path(runner.resolver.step_dirs[step.name]) / "eval.json"
        try:
            gates = json.loads(path.read_text()).get("gates", {})
        except (OSError, ValueError):
            continue
        if not step.gate:
            verdict = "no gates"
        elif gates.get("passed"):
            verdict = "passed"
        else:
            verdict = f"FAILED ({len(gates.get('breaches', []))} breach(es))"
        lines.append(f"  gates   eval {step.name}: {verdict}  ({path})")
    for pushed in getattr(runner, "pushed", []):
        lines.append(f"  pushed  {pushed.step} → {pushed.repo}: {pushed.url}")
    if results is not None and final is not None and not getattr(runner, "pushed", []):
        lines.append(f"  share   lossless push {recipe.path} ORG/NAME")
    return lines


def print_summary(runner: Any, results: Sequence[Any] | None, seconds: float) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)
    for line in summary_lines(runner, results, seconds):
        console.print(escape(line), soft_wrap=True)  # paths stay whole, for copy and paste
