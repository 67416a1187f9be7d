"""Time and peak RSS of `lossless validate` and `run` on every hostile YAML file in tests/hostile/.

python benchmarks/yaml_bombs.py      # one line per file: seconds (validate, run), peak RSS
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tests.test_yaml_limits import CASES, measure


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "fifty-mb.yaml"
        big.write_text("models:\n  - model: " + "x" * 50_000_000 + "\nmerge_method: linear\n")
        for case in [*CASES, big]:
            r = measure(case, Path(tmp) / "out")
            print(
                f"{case.name:22} validate {r['validate']['seconds']:.3f} s  "
                f"run {r['run']['seconds']:.3f} s  peak RSS {r['rss_mb']:.0f} MB  "
                f"(exit {r['validate']['rc']}/{r['run']['rc']})"
            )
    print(json.dumps({"files": len(CASES) + 1}))


if __name__ == "__main__":
    main()
