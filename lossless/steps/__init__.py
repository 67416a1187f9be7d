"""One module per step kind, and the one table the runner dispatches through.

Each kind is `run(step, ctx) -> known hashes | None`: it reads its inputs through
`ctx.resolver`, writes everything into `ctx.out_dir` and knows nothing of caching or publishing
(the runner's). `on_fresh(step, output)` runs when the step is skipped as fresh (an eval step
re-judges its gates from the saved numbers); `preflight(step, options)` runs for every step
that will run, before the first one starts (a train step that needs a launcher or deepspeed). Adding a step kind: a module here, a line below,
a dataclass in `recipe/model.py`, its keys in the schema and in `recipe/inputs.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossless.steps import apply, eval, generate, merge, train


@dataclass(frozen=True)
class StepKind:
    run: Callable[[Any, Any], Any]
    on_fresh: Callable[[Any, Path], None] | None = None
    preflight: Callable[[Any, Any], None] | None = None


HANDLERS: dict[str, StepKind] = {
    "generate": StepKind(generate.run),
    "train": StepKind(train.run, preflight=train.preflight),
    "apply": StepKind(apply.run),
    "merge": StepKind(merge.run),
    "eval": StepKind(eval.run, on_fresh=eval.check_saved_gates),
}
