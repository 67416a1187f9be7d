"""Record `recorded_output.json`: lm-eval's real output on the tiny tasks of `tasks/`, for the
tests that parse it without lm-eval installed (tests/test_task_results.py).

    pip install 'lossless[lm-eval]'
    python -m tests.lm_eval.record     # from the repository root

Two random tiny models (tests/factories.py, seeds 0 and 1) run `tiny_suite` (a group of a
multiple-choice and a generation task) one-shot and `tiny_text` (perplexity) zero-shot, through
lossless's own harness (two `simple_evaluate` calls, merged). Machine paths are replaced by
`<tasks>` and `<model>` so the file does not depend on where it was recorded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
TASKS = ({"name": "tiny_suite", "num_fewshot": 1}, {"name": "tiny_text", "num_fewshot": 0})


def main() -> None:
    from lossless.evaluation.harness import harness_settings, run_tasks, task_manager
    from lossless.recipe.model import EvalStep, ModelRef
    from lossless.steps.eval import _load_model
    from tests.factories import make_model

    settings = {"tasks": list(TASKS), "include_path": "tasks", "batch_size": 4}
    harness = harness_settings("record", settings, HERE)
    manager = task_manager("record", harness)
    step = EvalStep("record", (ModelRef.parse("m"),), {}, settings=settings)
    recorded = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed, name in ((0, "base"), (1, "merged")):
            model_dir = make_model(Path(tmp) / name, seed=seed)
            model, tokenizer = _load_model(step, model_dir, name)
            output = run_tasks(model, tokenizer, harness, manager, label=name, quiet=True)
            text = json.dumps(output)
            for path, mark in ((str(HERE / "tasks"), "<tasks>"), (str(model_dir), "<model>")):
                text = text.replace(path, mark)
            recorded[name] = json.loads(text)
    target = HERE / "recorded_output.json"
    target.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
