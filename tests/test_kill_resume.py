"""SIGKILL at chosen points, then a plain rerun: the outputs come out byte for byte as an
uninterrupted run makes them, and no rerun trips over what the killed one left.

Each kill runs in a child process that patches one function to SIGKILL itself at that point
(halfway through a shard, inside a trainer checkpoint save, halfway through a state record).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lossless.training.checkpoints import newest_complete
from tests.factories import make_model, write_jsonl

MERGE = """\
models:
  - model: {a}
    parameters: {{weight: 0.3}}
  - model: {b}
    parameters: {{weight: 0.7}}
merge_method: linear
dtype: float32
output: merged
"""

TRAIN = """\
train:
  skill:
    base: {base}
    method: lora
    data: data.jsonl
    lora: {{r: 4}}
    max_steps: 4
    save_steps: 2
    batch_size: 4
    learning_rate: 1e-2
"""

KILLERS = {
    # the second shard is half written when the process dies
    "shard": """
        from lossless.tensors import output_shards
        put = output_shards.OutputShards._put  # under write and write_bits
        def dying_put(self, shard, slot, raw, first_row, rows):
            if "00002" in shard.spec.file and shard.fd >= 0:  # one of its tensors is written
                data = raw.tobytes()
                os.pwrite(shard.fd, data[: len(data) // 2], shard.data_start + slot.begin)
                os.kill(os.getpid(), signal.SIGKILL)
            put(self, shard, slot, raw, first_row, rows)
        output_shards.OutputShards._put = dying_put
    """,
    # the step's output is published; its state record is half written
    "state": """
        from lossless.engine import state
        def dying_write(self, step, *args, **kwargs):
            self.root.mkdir(parents=True, exist_ok=True)
            self.path(step).with_suffix(".json.tmp").write_text('{"step": "mer')
            os.kill(os.getpid(), signal.SIGKILL)
        state.StateStore.write = dying_write
    """,
    # checkpoint-4's weights and optimizer are saved, its trainer_state.json is not
    "checkpoint": """
        import transformers
        save = transformers.Trainer._save_rng_state
        def dying_save(self, output_dir):
            if str(output_dir).endswith("checkpoint-4"):
                os.kill(os.getpid(), signal.SIGKILL)
            save(self, output_dir)
        transformers.Trainer._save_rng_state = dying_save
    """,
}


def run(recipe: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    prelude = textwrap.dedent(KILLERS[kill]) if kill else ""
    code = (
        "import os, signal, sys\n" + prelude + "\nfrom lossless.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "run", str(recipe), "--quiet", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def files(directory: Path) -> dict[str, bytes]:
    """Every file's bytes, the manifest without its recipe path (recipes differ by folder)."""
    found = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "lossless-manifest.json":
            manifest = json.loads(data)
            data = json.dumps([manifest["files"], manifest["sizes"]]).encode()
        found[path.relative_to(directory).as_posix()] = data
    return found


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill-models")
    make_model(root / "a", seed=1)
    make_model(root / "b", seed=2)
    return root


def project(root: Path, text: str) -> Path:
    root.mkdir(parents=True)
    recipe = root / "r.yaml"
    recipe.write_text(text)
    return recipe


@pytest.mark.parametrize("point", ["shard", "state"])
def test_merge_killed_then_rerun_is_byte_identical(
    point: str, models: Path, tmp_path: Path
) -> None:
    text = MERGE.format(a=models / "a", b=models / "b")
    reference = project(tmp_path / "reference", text)
    assert run(reference, "--out-shard-size", "20K").returncode == 0
    killed = project(tmp_path / "killed", text)
    died = run(killed, "--out-shard-size", "20K", kill=point)
    assert died.returncode == -signal.SIGKILL, died.stderr
    again = run(killed, "--out-shard-size", "20K")
    assert again.returncode == 0, again.stderr
    assert files(killed.parent / "merged") == files(reference.parent / "merged")
    assert not list(killed.parent.glob(".merged.*"))  # no partial or lock left behind


def test_training_killed_in_a_checkpoint_save_resumes_to_the_same_adapter(
    tmp_path: Path,
) -> None:
    base = make_model(tmp_path / "base", layers=1)
    rows = [{"prompt": f"add {i} {i}:", "completion": f" {2 * i}"} for i in range(8)]
    text = TRAIN.format(base=base)
    reference, killed = project(tmp_path / "ref", text), project(tmp_path / "killed", text)
    for recipe in (reference, killed):
        write_jsonl(recipe.parent / "data.jsonl", rows)
    assert run(reference).returncode == 0
    died = run(killed, kill="checkpoint")
    assert died.returncode == -signal.SIGKILL, died.stderr
    (partial,) = (killed.parent / ".lossless" / "r").glob(".skill.partial-*")
    torn = partial / "checkpoints" / "checkpoint-4"
    assert torn.is_dir() and not (torn / "trainer_state.json").exists()
    again = run(killed)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # run with --quiet: the torn checkpoint is discarded silently
    out = killed.parent / ".lossless" / "r" / "skill"
    ref = reference.parent / ".lossless" / "r" / "skill"
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] == "checkpoint-2"
    name = "adapter_model.safetensors"
    assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_newest_complete_skips_each_kind_of_torn_checkpoint(tmp_path: Path) -> None:
    def checkpoint(n: int, **files: bytes) -> Path:
        path = tmp_path / f"checkpoint-{n}"
        path.mkdir()
        for name, data in files.items():
            (path / name.replace("_safetensors", ".safetensors").replace("_pt", ".pt")).write_bytes(
                data
            )
        return path

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    whole = len(header).to_bytes(8, "little") + header + b"\0" * 8
    good = checkpoint(2, trainer_state_json=b"{}", adapter_model_safetensors=whole)
    os.rename(good / "trainer_state_json", good / "trainer_state.json")
    checkpoint(4, adapter_model_safetensors=whole)  # no trainer_state.json
    cut = checkpoint(6, adapter_model_safetensors=whole[:-3])
    (cut / "trainer_state.json").write_text("{}")
    bad_zip = checkpoint(8, adapter_model_safetensors=whole, optimizer_pt=b"PK\x03\x04 cut")
    (bad_zip / "trainer_state.json").write_text("{}")
    notes: list[str] = []
    assert newest_complete(tmp_path, note=notes.append) == good
    assert [n.split(" (")[1].split(")")[0] for n in notes] == [
        "optimizer.pt is cut short",
        "adapter_model.safetensors is cut short",
        "no trainer_state.json: the save was interrupted",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    shutil.rmtree(good)
    assert newest_complete(tmp_path) is None


def test_newest_complete_discards_torn_checkpoints_silently_when_quiet(tmp_path: Path) -> None:
    torn = tmp_path / "checkpoint-3"
    torn.mkdir()  # no trainer_state.json
    notes: list[str] = []
    assert newest_complete(tmp_path, note=notes.append, quiet=True) is None
    assert notes == [] and not torn.exists()
