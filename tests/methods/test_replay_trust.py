"""The replay's self-check remembered per torch installation (methods/replay_trust.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossless.methods import replay_trust, sort_replay

CHILD = """
import json, sys
from lossless.methods import replay_trust
print(json.dumps({"trusted": replay_trust.replay_trusted(), "torch": "torch" in sys.modules}))
"""


def ask(cache: Path) -> dict[str, bool]:
    env = {**os.environ, "LOSSLESS_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_first_process_checks_with_torch_and_later_ones_need_no_torch(tmp_path: Path) -> None:
    assert ask(tmp_path) == {"trusted": True, "torch": True}
    remembered = json.loads((tmp_path / "replay.json").read_text())
    assert remembered == {replay_trust.installation_key(): True}
    assert ask(tmp_path) == {"trusted": True, "torch": False}


def test_another_installation_or_replay_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOSSLESS_CACHE", str(tmp_path))
    key = replay_trust.installation_key()
    assert key is not None and "sort_replay_kernel.py:" in key and "libtorch_cpu" in key
    (tmp_path / "replay.json").write_text(json.dumps({"an older torch": False, key: False}))
    replay_trust.replay_trusted.cache_clear()
    try:
        assert replay_trust.replay_trusted() is False  # remembered: not checked again
        monkeypatch.setattr(replay_trust, "installation_key", lambda: key + "|changed")
        replay_trust.replay_trusted.cache_clear()
        assert replay_trust.replay_trusted() is sort_replay.replay_agrees() is True
        remembered = json.loads((tmp_path / "replay.json").read_text())
        assert remembered == {"an older torch": False, key: False, key + "|changed": True}
    finally:
        replay_trust.replay_trusted.cache_clear()


def test_a_cache_that_cannot_be_written_only_costs_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LOSSLESS_CACHE", str(tmp_path / "file" / "below"))  # not a folder
    replay_trust.replay_trusted.cache_clear()
    try:
        assert replay_trust.replay_trusted() is True
    finally:
        replay_trust.replay_trusted.cache_clear()
