"""Session-wide test settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_hash_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Content hashes (engine/content_hash.py) go to a per-session folder, not ~/.cache."""
    os.environ["LOSSLESS_CACHE"] = str(tmp_path_factory.mktemp("lossless-cache"))
