"""Fingerprints tell apart what must be told apart, and say what changed."""

from __future__ import annotations

from pathlib import Path

from lossless.engine.fingerprint import Fingerprint, digest, path_identity
from tests.factories import make_model


def test_same_architecture_different_weights_differ(tmp_path: Path) -> None:
    # Two random models of one config have byte-identical safetensors headers.
    a = make_model(tmp_path / "a", seed=1, shard_size="40KB")
    b = make_model(tmp_path / "b", seed=2, shard_size="40KB")
    assert (a / "model.safetensors.index.json").read_bytes() == (
        b / "model.safetensors.index.json"
    ).read_bytes()
    assert path_identity(a) != path_identity(b)


def test_identity_is_stable_and_ignores_checkpoints(tmp_path: Path) -> None:
    a = make_model(tmp_path / "a", seed=1)
    first = path_identity(a)
    (a / "checkpoints").mkdir()
    (a / "checkpoints" / "junk.bin").write_bytes(b"x")
    assert path_identity(a) == first
    (a / "config.json").write_text((a / "config.json").read_text() + " ")
    assert path_identity(a) != first


def test_changes_are_named() -> None:
    old = Fingerprint({"settings": "1", "step:train": "a", "data:x.jsonl": "d"})
    new = Fingerprint({"settings": "2", "step:train": "a", "model:org/m": "h"})
    assert new.changes_from(old.components) == [
        "data:x.jsonl: removed",
        "model:org/m: new",
        "settings: changed",
    ]
    assert old.value != new.value
    assert digest({"b": 1, "a": (1, 2)}) == digest({"a": [1, 2], "b": 1})
