"""Hub references against a fake Hub on localhost: the real huggingface_hub client, no network.

Two revisions of `org/tiny` (tiny Llamas from tests/factories.py with different seeds): v1 is
tagged `v1`, v2 is `main`. Each test gets its own cache (HF_HOME under tmp_path).
"""

from __future__ import annotations

import hashlib
import time
import types
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.hub.downloads import check_disk_space, describe_downloads, human_bytes, plan_downloads
from lossless.hub.repos import (
    HubRef,
    parse_hub_ref,
    resolve_commit,
    resolve_metadata,
    resolve_model,
)
from tests.fake_hub import Drop, FakeHub, use_fake_hub, write_tiny_safetensors


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny models (v1, v2) saved by transformers, with extras a download must skip."""
    from tests.factories import make_model

    root = tmp_path_factory.mktemp("models")
    out = {}
    for seed, name in enumerate(["v1", "v2"]):
        model = make_model(root / name, family="llama", layers=1, seed=seed)
        (model / "README.md").write_text("# tiny\n")
        (model / "pytorch_model.bin").write_bytes(b"a pickle would run code on load")
        (model / "original").mkdir()
        (model / "original" / "consolidated.safetensors").write_bytes(b"not needed")
        out[name] = model
    return out


@pytest.fixture
def hub(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeHub()
    fake.set_ref("org/tiny", "v1", fake.add_commit("org/tiny", models["v1"]))
    fake.add_commit("org/tiny", models["v2"])
    pickle_only = {"config.json": b"{}", "pytorch_model.bin": b"pickled weights"}
    fake.add_commit("org/pickled", pickle_only)
    fake.add_commit("org/gated", models["v1"])
    fake.repos["org/gated"].gated = True
    fake.repos["org/gated"].granted_tokens.add("hf_granted")
    with fake.serving():
        use_fake_hub(fake, monkeypatch, tmp_path / "hf")
        yield fake


def test_parse_hub_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_hub_ref("Qwen/Qwen2-7B") == HubRef("Qwen/Qwen2-7B", None)
    assert parse_hub_ref("org/name@v1.0") == HubRef("org/name", "v1.0")
    assert parse_hub_ref("hub:org/name@main") == HubRef("org/name", "main")
    assert parse_hub_ref("hf://datasets/org/data") == HubRef("org/data", None, "dataset")
    assert parse_hub_ref("merged") is None  # a step name
    assert parse_hub_ref("./models/x") is None
    assert parse_hub_ref("org/name@") is None
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    assert parse_hub_ref(str(local)) is None  # an existing directory wins
    monkeypatch.chdir(tmp_path)
    assert parse_hub_ref("org/name") is None
    assert parse_hub_ref("hub:org/name") == HubRef("org/name", None)  # unless the prefix says hub


def test_download_fetches_only_what_a_step_needs(
    hub: FakeHub, models: dict[str, Path], tmp_path: Path
) -> None:
    resolved = resolve_model("org/tiny", quiet=True)
    assert resolved.repo_id == "org/tiny"
    assert resolved.commit == hub.resolve("org/tiny", "main")
    assert resolved.path.is_relative_to(tmp_path / "hf" / "hub")  # HF_HOME honoured
    names = sorted(p.name for p in resolved.path.iterdir())
    assert "config.json" in names and "model.safetensors" in names and "tokenizer.json" in names
    for skipped in ("pytorch_model.bin", "README.md", "original"):
        assert skipped not in names
    assert sha(resolved.path / "model.safetensors") == sha(models["v2"] / "model.safetensors")
    fetched = {p.rsplit("/", 1)[-1] for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p}
    assert "pytorch_model.bin" not in fetched and "README.md" not in fetched


def test_revision_pinning_branch_tag_commit(hub: FakeHub, models: dict[str, Path]) -> None:
    v1, v2 = sha(models["v1"] / "model.safetensors"), sha(models["v2"] / "model.safetensors")
    assert v1 != v2
    by_tag = resolve_model("org/tiny@v1", quiet=True)
    by_commit = resolve_model("org/tiny", revision=hub.resolve("org/tiny", "v1"), quiet=True)
    by_branch = resolve_model("org/tiny@main", quiet=True)
    assert by_tag.commit == by_commit.commit == hub.resolve("org/tiny", "v1")
    assert sha(by_tag.path / "model.safetensors") == v1
    assert sha(by_commit.path / "model.safetensors") == v1
    assert sha(by_branch.path / "model.safetensors") == v2
    assert resolve_commit("org/tiny@v1") == hub.resolve("org/tiny", "v1")


def test_pickle_only_downloaded_when_allowed(hub: FakeHub) -> None:
    with pytest.raises(LosslessError) as info:
        resolve_model("org/pickled", quiet=True)
    assert str(info.value).startswith(
        "org/pickled@main has only pickle weights (pytorch_model.bin)"
    )
    assert "--allow-pickle" in str(info.value)
    resolved = resolve_model("org/pickled", allow_pickle=True, quiet=True)
    assert (resolved.path / "pytorch_model.bin").read_bytes() == b"pickled weights"


def test_gated_repo_names_repo_and_fix(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LosslessError) as info:
        resolve_model("org/gated", quiet=True)
    text = str(info.value)
    assert "org/gated is a gated repo" in text
    assert "hf auth login" in text and "HF_TOKEN" in text
    monkeypatch.setenv("HF_TOKEN", "hf_someone_else")
    with pytest.raises(LosslessError, match="has not been granted access"):
        resolve_model("org/gated", quiet=True)
    monkeypatch.setenv("HF_TOKEN", "hf_granted")  # the token is read from the usual places
    assert (resolve_model("org/gated", quiet=True).path / "config.json").is_file()


def test_missing_repo_and_revision(hub: FakeHub) -> None:
    with pytest.raises(LosslessError, match=r"repo org/nope not found on http://127\.0\.0\.1"):
        resolve_model("org/nope", quiet=True)
    with pytest.raises(LosslessError, match="revision 'v9' not found in org/tiny"):
        resolve_model("org/tiny@v9", quiet=True)
    with pytest.raises(LosslessError, match="neither a local directory nor a hub id"):
        resolve_model("not a ref", quiet=True)


def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client sleeps 1 s before each retry; tests need not wait."""
    from huggingface_hub import file_download

    no_sleep = types.SimpleNamespace(**{**vars(time), "sleep": lambda seconds: None})
    monkeypatch.setattr(file_download, "time", no_sleep)


@pytest.mark.parametrize("chunk", [256, 10 * 1024 * 1024])
def test_interrupted_download_is_resumed(
    hub: FakeHub, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    from huggingface_hub import constants

    no_retry_wait(monkeypatch)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    hub.drops[("org/tiny", "model.safetensors")] = Drop(after=1000, times=1)
    resolved = resolve_model("org/tiny", quiet=True)
    assert sha(resolved.path / "model.safetensors") == sha(models["v2"] / "model.safetensors")
    gets = [h for m, p, h in hub.requests if m == "GET" and p.endswith("/model.safetensors")]
    ranges = [{k.lower(): v for k, v in h.items()}.get("range") for h in gets]
    # The client keeps the whole chunks it wrote and asks for the rest with a Range request
    # (the fake answers 206). With the default 10 MB chunks a small file restarts from byte 0.
    assert ranges == ([None, "bytes=768-"] if chunk == 256 else [None, None])


def test_interrupted_download_fails_clearly_without_half_file(
    hub: FakeHub, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_retry_wait(monkeypatch)
    hub.drops[("org/tiny", "model.safetensors")] = Drop(after=0, times=1000)
    with pytest.raises(LosslessError, match="download of org/tiny@main failed") as info:
        resolve_model("org/tiny", quiet=True)
    assert "run the command again" in str(info.value)
    cache = tmp_path / "hf" / "hub" / "models--org--tiny"
    assert not list(cache.glob("snapshots/*/model.safetensors"))
    assert not list(cache.glob("blobs/*.incomplete"))
    model_blob = cache / "blobs" / sha(models["v2"] / "model.safetensors")  # LFS blobs: sha256
    assert (cache / "blobs").is_dir() and not model_blob.exists()
    hub.drops.clear()  # the next run completes the snapshot
    assert (resolve_model("org/tiny", quiet=True).path / "model.safetensors").is_file()


def test_offline_with_and_without_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LosslessError, match="HF_HUB_OFFLINE is set and org/tiny@main is not"):
        resolve_model("org/tiny", quiet=True)
    with pytest.raises(LosslessError, match="HF_HUB_OFFLINE"):
        resolve_commit("org/tiny")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    online = resolve_model("org/tiny", quiet=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    offline = resolve_model("org/tiny", quiet=True)
    assert offline == online
    assert resolve_commit("org/tiny") == online.commit
    assert len(hub.requests) == before  # nothing asked of the network


def test_plan_downloads_counts_bytes(
    hub: FakeHub, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    needed = ["config.json", "generation_config.json", "model.safetensors"]
    needed += [p.name for p in models["v2"].glob("tokenizer*")]
    expected = sum((models["v2"] / name).stat().st_size for name in needed)
    plan = plan_downloads(["org/tiny", "org/tiny@main", "merged", "org/tiny@v1"])
    assert [(p.repo_id, p.revision) for p in plan] == [("org/tiny", "main"), ("org/tiny", "v1")]
    assert plan[0].commit == hub.resolve("org/tiny", "main")
    assert plan[0].bytes == plan[0].fetch_bytes == expected
    assert not [m for m, p, _ in hub.requests if "/resolve/" in p]  # no file was touched
    commit = hub.resolve("org/tiny", "main") or ""
    assert describe_downloads(plan[:1]) == [
        f"org/tiny@main (commit {commit[:12]}): fetch {human_bytes(expected)} of "
        f"{human_bytes(expected)}",
        f"total to download: {human_bytes(expected)} from 1 repo(s)",
    ]
    resolve_model("org/tiny", quiet=False)  # with the hub client's progress bars
    again = plan_downloads(["org/tiny"])
    assert again[0].bytes == expected and again[0].fetch_bytes == 0
    assert "in cache" in describe_downloads(again)[0]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    assert plan_downloads(["org/tiny"]) == again  # from the cache's records, no request
    with pytest.raises(LosslessError, match="HF_HUB_OFFLINE is set and org/tiny@v1 is not"):
        plan_downloads(["org/tiny@v1"])
    assert len(hub.requests) == before


def test_check_disk_space(tmp_path: Path) -> None:
    check_disk_space(tmp_path / "not" / "yet", 1)
    with pytest.raises(LosslessError, match="not enough disk space") as info:
        check_disk_space(tmp_path, 10**18)
    assert "1000000.0 TB" in str(info.value)
    assert human_bytes(1_234_567) == "1.2 MB" and human_bytes(999) == "999 B"


def test_local_directory_is_used_as_is(tmp_path: Path) -> None:
    write_tiny_safetensors(tmp_path / "m" / "model.safetensors", {"w": [1.0]})
    assert resolve_model(str(tmp_path / "m")).path == tmp_path / "m"


def test_dataset_repo_and_transformers_cache(hub: FakeHub, tmp_path: Path) -> None:
    files = {
        "train.jsonl": b'{"text": "a"}\n',
        "data/part-0.parquet": b"PAR1",
        "loader.py": b"import os  # a loading script would run code",
        "cache.pkl": b"pickle",
    }
    commit = hub.add_commit("datasets/org/data", files)
    cache = tmp_path / "transformers-cache"  # mergekit's --transformers-cache
    resolved = resolve_model("hf://datasets/org/data", cache_dir=str(cache), quiet=True)
    assert resolved.commit == commit and resolved.path.is_relative_to(cache / "datasets--org--data")
    got = sorted(p.relative_to(resolved.path).as_posix() for p in resolved.path.rglob("*.*"))
    assert got == ["data/part-0.parquet", "train.jsonl"]
    assert resolve_commit("hf://datasets/org/data") == commit
    [planned] = plan_downloads(["hf://datasets/org/data"], cache_dir=str(cache))
    assert planned.bytes == len(files["train.jsonl"]) + 4 and planned.fetch_bytes == 0


def test_unreachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeHub()
    with fake.serving():
        use_fake_hub(fake, monkeypatch, tmp_path / "hf")
    # the server is gone now: connections to its port are refused
    with pytest.raises(LosslessError, match=r"cannot reach http://127\.0\.0\.1:\d+ to download"):
        resolve_model("org/tiny", quiet=True)
    with pytest.raises(LosslessError, match="cannot reach") as info:
        resolve_commit("org/tiny@v1")
    assert "HF_HUB_OFFLINE=1" in str(info.value)


def test_resolve_metadata_fetches_no_weights(hub: FakeHub, models: dict[str, Path]) -> None:
    resolved = resolve_metadata("org/tiny@v1")
    assert sorted(p.name for p in resolved.path.iterdir()) == ["config.json"]
    assert (resolved.path / "config.json").read_bytes() == (
        models["v1"] / "config.json"
    ).read_bytes()
    assert not [p for m, p, _ in hub.requests if p.endswith(".safetensors")]
    assert resolve_metadata(str(models["v1"])).path == models["v1"]
