"""One rank of a launched train step: `python -m lossless.training.worker SPEC.json`.

`training/launch.py` writes SPEC (the step's name and block, its resolved input directories,
the partial dir to write into) and starts N of these through accelerate or torchrun. Each
rebuilds the step's TrainSettings from the block, exactly as the recipe did, and trains; rank 0
writes the output. A LosslessError (a user's mistake) is written to `error-<rank>.json` for the
main process to show as it would its own; anything else ends the rank with its traceback in the
launch log.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    if spec["quiet"]:
        from lossless.commands.common import silence_third_party

        silence_third_party()
    from lossless.errors import LosslessError
    from lossless.recipe.build import build_train
    from lossless.steps.train import run_train

    def path(key: str) -> Path | None:
        return Path(spec[key]) if spec[key] else None

    try:
        run_train(
            build_train(spec["name"], spec["block"]),
            base_dir=path("base_dir"),
            teacher_dir=path("teacher_dir"),
            out_dir=Path(spec["out_dir"]),
            recipe_dir=Path(spec["recipe_dir"]),
            quiet=spec["quiet"],
            seed=spec["seed"],
            processes=spec["processes"],
        )
    except LosslessError as error:
        rank = os.environ.get("RANK", "0")
        report = {"message": error.message, "hint": error.hint}
        (Path(spec["errors"]) / f"error-{rank}.json").write_text(json.dumps(report))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
