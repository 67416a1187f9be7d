"""`-q` means quiet: a run that loads, trains and evaluates models prints nothing on success."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.factories import make_model, write_jsonl


def test_quiet_run_prints_nothing(tmp_path: Path) -> None:
    make_model(tmp_path / "base", seed=0)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    write_jsonl(tmp_path / "data.jsonl", [{"messages": chat}] * 8)
    (tmp_path / "r.yaml").write_text(
        "train:\n  skill:\n    base: ./base\n    method: lora\n    data: data.jsonl\n"
        "    max_steps: 2\n    lora: {r: 4, alpha: 8}\n"
        "apply:\n  tuned: {adapter: skill, to: ./base, save: true}\n"
        "eval:\n  check:\n    models: [./base, tuned]\n    data: {d: data.jsonl}\n"
    )
    # On a terminal, as a person runs it: progress bars draw only when they see a tty.
    leader, follower = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "lossless", "run", "r.yaml", "-q"],
        cwd=tmp_path,
        stdout=follower,
        stderr=follower,
        check=False,
    )
    os.close(follower)
    printed = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal is closed once everything is read
            break
        if not chunk:
            break
        printed += chunk
    os.close(leader)
    assert done.returncode == 0, printed.decode(errors="replace")
    assert (tmp_path / ".lossless" / "r" / "check" / "eval.json").is_file()
    assert printed.decode(errors="replace").strip() == ""
