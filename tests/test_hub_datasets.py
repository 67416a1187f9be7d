"""Hub datasets through `datasets.load_dataset` against the fake hub: ids with dots, `@revision`,
`split` and `subset`, loaded at the commit the run pinned, locked by that commit, offline
reruns, errors at the recipe's line, `--only` untouched by another step's dataset; local
dataset directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.cli import main as cli
from lossless.engine.lockfile import lock_path
from lossless.errors import LosslessError
from lossless.recipe.references import data_kind
from lossless.training.datasets import load_source
from lossless.training.hub_datasets import HubDataError, load_hub_rows
from lossless.training.settings import DataSource
from tests.factories import make_model, write_jsonl
from tests.fake_hub import FakeHub, use_fake_hub_for_datasets

REPO = "teknium/OpenHermes-2.5"  # a dot in the name: shaped like a file, read as a dataset
ROWS = [
    {"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
    for i in range(6)
]
README = b"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train.jsonl
  - split: test
    path: data/test.jsonl
- config_name: extra
  data_files:
  - split: train
    path: extra/train.jsonl
---
# a dataset card
"""


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def dataset_files(rows: list[dict]) -> dict[str, bytes]:
    return {
        "README.md": README,
        "data/train.jsonl": jsonl(rows),
        "data/test.jsonl": jsonl(rows[:2]),
        "extra/train.jsonl": jsonl([{"text": "extra row"}]),
    }


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeHub()
    fake.add_commit(f"datasets/{REPO}", dataset_files(ROWS))
    with fake.serving():
        use_fake_hub_for_datasets(fake, monkeypatch, tmp_path / "hf")
        yield fake


def downloads(hub: FakeHub) -> list[str]:
    return [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]


def test_which_data_values_are_hub_datasets(tmp_path: Path) -> None:
    (tmp_path / "data" / "local_set").mkdir(parents=True)
    cases = {
        REPO: "hub",
        "org/set@v1.0": "hub",
        "hf://datasets/org/set": "hub",
        "data/train.jsonl": "local",  # missing, but a data file by its suffix
        "data/local_set": "local",  # an existing dataset directory
        "./org/set": "local",
        "notes": "local",  # no org/name: validation says it does not exist
        "rehearsal": "step",
    }
    assert {v: data_kind(v, {"rehearsal"}, tmp_path) for v in cases} == cases


def test_rows_of_a_split_and_subset_at_a_commit(hub: FakeHub) -> None:
    first = hub.resolve(f"datasets/{REPO}", "main")
    assert load_hub_rows(REPO, revision=first, split="test", quiet=True) == ROWS[:2]
    assert load_hub_rows(REPO, revision=first, subset="extra", quiet=True) == [
        {"text": "extra row"}
    ]
    assert all(f"/resolve/{first}/" in p for p in downloads(hub))
    # The branch moves on; the pinned commit still gives what it gave.
    hub.add_commit(f"datasets/{REPO}", dataset_files(ROWS[:1]))
    assert load_hub_rows(REPO, revision=first, quiet=True) == ROWS
    assert load_hub_rows(REPO, quiet=True) == ROWS[:1]  # main, now


@pytest.mark.parametrize(
    ("repo", "options", "message", "hint"),
    [
        (REPO, {"split": "validation"}, "has no split 'validation'", "set `split:`"),
        (REPO, {"subset": "nope"}, "has no subset 'nope'", "set `subset:`"),
        ("org/missing", {}, "doesn't exist on the Hub", "HF_TOKEN"),
        ("org/gated", {}, "gated", "HF_TOKEN"),
    ],
)
def test_load_errors_say_what_and_how_to_fix(
    hub: FakeHub, repo: str, options: dict, message: str, hint: str
) -> None:
    hub.add_commit("datasets/org/gated", {"train.jsonl": jsonl(ROWS)})
    hub.repos["datasets/org/gated"].gated = True
    with pytest.raises(HubDataError) as error:
        load_hub_rows(repo, quiet=True, **options)
    assert message in error.value.message and hint in (error.value.hint or "")
    assert error.value.repo_id == repo


def test_offline_rerun_reads_the_cache(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lossless.engine.resolver import Resolver
    from lossless.recipe.build import build_recipe

    recipe = build_recipe(str(tmp_path / "r.yaml"), [{"train": {"t": {"data": REPO}}}])
    commit = Resolver(recipe).dataset_commit(REPO)  # as a run does: remembers main → commit
    assert commit == hub.resolve(f"datasets/{REPO}", "main")
    assert load_hub_rows(REPO, revision=commit, quiet=True) == ROWS
    use_fake_hub_for_datasets(hub, monkeypatch, tmp_path / "hf", offline=True)
    hub.requests.clear()
    assert Resolver(recipe).dataset_commit(REPO) == commit  # from the cache's refs/main
    assert load_hub_rows(REPO, revision=commit, quiet=True) == ROWS
    assert hub.requests == []
    with pytest.raises(HubDataError) as error:
        load_hub_rows("org/never-fetched", quiet=True)
    assert "cannot reach" in error.value.message and "local file" in (error.value.hint or "")


RECIPE = """\
# a hub dataset mixed with a local file
train:
  chat:
    base: ./tiny
    data:
      - {path: teknium/OpenHermes-2.5, weight: 1}
      - {path: local.jsonl, weight: 1}
    format: chat
    max_steps: 2
    batch_size: 2
    max_seq_length: 32
"""
OTHER = """\
  other:
    base: ./tiny
    data: {path: org/not-there.v2, split: train}
    max_steps: 1
"""


def write_recipe(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    local = [
        {"messages": [{"role": "user", "content": f"l{i}"}, {"role": "assistant", "content": "ok"}]}
        for i in range(6)
    ]
    write_jsonl(root / "local.jsonl", local)
    recipe = root / "recipe.yaml"
    recipe.write_text(text)
    return recipe


def test_lock_pins_hub_datasets_by_commit_without_downloading(hub: FakeHub, tmp_path: Path) -> None:
    tag = hub.add_commit("datasets/org/set", {"train.jsonl": jsonl(ROWS)})
    hub.set_ref("datasets/org/set", "v1", tag)
    hub.add_commit("datasets/org/set", {"train.jsonl": jsonl(ROWS[:1])})  # main moves past v1
    text = RECIPE + "    replay: {data: {path: org/set, revision: v1}, fraction: 0.5}\n"
    recipe = write_recipe(tmp_path / "r", text.replace("./tiny", "org/tiny-model"))
    assert cli(["validate", str(recipe)]) == 0
    hub.add_commit("org/tiny-model", {"config.json": b"{}"})
    assert cli(["lock", str(recipe)]) == 0
    inputs = json.loads(lock_path(recipe).read_text())["inputs"]
    assert inputs[REPO] == {
        "kind": "hub",
        "repo": REPO,
        "repo_type": "dataset",
        "revision": "main",
        "commit": hub.resolve(f"datasets/{REPO}", "main"),
    }
    assert inputs["org/set@v1"]["commit"] == tag and inputs["org/set@v1"]["revision"] == "v1"
    assert inputs["local.jsonl"]["kind"] == "file"
    assert downloads(hub) == []


def test_a_dataset_that_cannot_be_resolved_names_its_line_and_the_fixes(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add_commit("org/tiny-model", {"config.json": b"{}"})
    recipe = write_recipe(tmp_path / "r", (RECIPE + OTHER).replace("./tiny", "org/tiny-model"))
    assert cli(["lock", str(recipe)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{recipe}:14:18 (train.other.data.path)" in err
    assert "org/not-there.v2 not found" in err
    assert "HF_TOKEN" in err and "use a local file" in err and "revision" in err


def test_a_run_trains_on_the_pinned_commit_and_only_skips_other_steps_datasets(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path / "r", RECIPE + OTHER)
    make_model(tmp_path / "r" / "tiny", layers=1)
    work = tmp_path / "w"
    first = hub.resolve(f"datasets/{REPO}", "main")
    capsys.readouterr()
    assert cli(["run", "-q", str(recipe), "--only", "chat", "--work-dir", str(work)]) == 0
    quiet = capsys.readouterr()
    assert (quiet.out, quiet.err) == ("", "")  # -q: no download or "Generating split" bars
    metrics = json.loads((work / "chat" / "metrics.json").read_text())
    assert metrics["examples"] == 12  # 6 hub rows + 6 local rows, half each: every row once
    assert downloads(hub) and all(f"/resolve/{first}/" in p for p in downloads(hub))
    assert not lock_path(recipe).exists()  # `other`'s dataset is unresolvable: no partial lock

    # The branch moves: the step's fingerprint names the dataset, and it trains again
    hub.add_commit(f"datasets/{REPO}", dataset_files(ROWS[:2]))
    capsys.readouterr()
    assert cli(["run", str(recipe), "--only", "chat", "--work-dir", str(work)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"data:{REPO}: changed" in err
    assert "recipe.lock not updated: org/not-there.v2 could not be resolved" in err
    metrics = json.loads((work / "chat" / "metrics.json").read_text())
    assert metrics["examples"] == 8  # 2 hub rows + 6 local ones, 4 each: hub rows twice


def test_local_dataset_directories(tmp_path: Path) -> None:
    import datasets

    split = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"text": "t1"}, {"text": "t2"}]),
            "test": datasets.Dataset.from_list([{"text": "held"}]),
        }
    )
    split.save_to_disk(str(tmp_path / "saved"))
    rows, label = load_source(DataSource("saved", split="test"), tmp_path, quiet=True)
    assert rows == [{"text": "held"}] and label.endswith("saved (test)")
    with pytest.raises(LosslessError, match=r"has no split 'dev'"):
        load_source(DataSource("saved", split="dev"), tmp_path, quiet=True)
    clone = tmp_path / "clone"  # a dataset repo's files, as `git clone` leaves them
    for name, data in dataset_files(ROWS).items():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_bytes(data)
    rows, _ = load_source(DataSource("clone", split="test"), tmp_path, quiet=True)
    assert rows == ROWS[:2]


def test_an_eval_step_measures_a_hub_split(hub: FakeHub, tmp_path: Path) -> None:
    root = tmp_path / "r"
    make_model(root / "tiny", layers=1)
    recipe = write_recipe(
        root,
        "eval:\n  measure:\n    models: [./tiny]\n    metrics: [loss]\n"
        f"    data: {{held: {{path: {REPO}, split: test, format: chat}}}}\n",
    )
    work = tmp_path / "w"
    assert cli(["run", "-q", str(recipe), "--work-dir", str(work)]) == 0
    report = json.loads((work / "measure" / "eval.json").read_text())
    commit = hub.resolve(f"datasets/{REPO}", "main")
    assert all(f"/resolve/{commit}/" in p for p in downloads(hub))
    assert "data/test.jsonl" in " ".join(downloads(hub))
    assert report["datasets"]["held"]["path"] == f"{REPO}@{commit} (test)"
    assert report["scores"]["./tiny"]["held"]["examples"] == 2  # the test split's two rows


def test_a_locked_run_reads_the_locked_commit_and_skips_what_it_could_not_resolve(
    hub: FakeHub, tmp_path: Path
) -> None:
    from lossless.engine.lockfile import check_locked, write_lock
    from lossless.engine.resolver import Resolver
    from lossless.recipe.build import build_recipe

    recipe = build_recipe(str(tmp_path / "r.yaml"), [{"train": {"t": {"data": REPO}}}])
    pinned = {"kind": "hub", "repo": REPO, "repo_type": "dataset", "commit": "c" * 40}
    hub.requests.clear()
    assert Resolver(recipe, locked={REPO: pinned}).dataset_commit(REPO) == "c" * 40
    assert hub.requests == []

    (tmp_path / "r.yaml").write_text("train: {}\n")
    write_lock(tmp_path / "r.yaml", {REPO: pinned, "org/other": {**pinned, "repo": "org/other"}})
    check_locked(tmp_path / "r.yaml", {REPO: pinned}, unresolved={"org/other": "offline"})
    with pytest.raises(LosslessError, match="org/other: in the lock but no longer used"):
        check_locked(tmp_path / "r.yaml", {REPO: pinned})
