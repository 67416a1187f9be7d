"""`<work dir>/.state/<step>.json`: what each finished step was made from, written after it ran.

A record holds the step's fingerprint with its named components (so `lossless plan` can say
which one changed), the output directory, `made` (a digest of the output's manifest: what was
actually written) and `inputs_made` (the `made` of each step it read, when it ran). Fingerprints
say what a step *would* make; `made` catches a dependency rebuilt under the same fingerprint
(`--force`, a nondeterministic GPU run), so its dependents do not stay fresh on stale inputs. It is written only after the output is published,
so an interrupted step is never taken for a finished one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lossless.engine.fingerprint import Fingerprint

STATE_DIR = ".state"


class StateStore:
    def __init__(self, work_dir: Path) -> None:
        self.root = work_dir / STATE_DIR

    def path(self, step: str) -> Path:
        return self.root / f"{step}.json"

    def read(self, step: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path(step).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def write(
        self,
        step: str,
        kind: str,
        fingerprint: Fingerprint,
        output: Path | None,
        *,
        made: str | None = None,
        inputs_made: dict[str, str | None] | None = None,
    ) -> None:
        record = {
            "step": step,
            "kind": kind,
            "fingerprint": fingerprint.value,
            "components": dict(fingerprint.components),
            "output": str(output) if output else None,
            "made": made,
            "inputs_made": inputs_made or {},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path(step).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, self.path(step))
