"""`lossless run --launcher`: train steps on several processes (2 CPU ranks, gloo).

The expected result of a 2-process run is exact: DDP with per-device batch b averages the two
ranks' gradients, and accelerate hands rank r the r-th batch of b from the same seeded order, so
each optimizer step sees the same 2b examples as one process with batch 2b (transformers
normalises the loss by the tokens of all ranks). Only the order of float32 additions differs
(the all-reduce adds two half-batch sums; padding differs by batch), about 1e-7 of a value per
step. After 4 AdamW steps the adapters differ by 3e-8 at most (measured); the test allows 1e-6,
and checks that the tolerance means something: one process with batch b (what each rank would
learn on its own) lands more than 1e-3 away.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossless.recipe.build import build_train
from lossless.steps.train import run_train
from tests.factories import make_model, write_jsonl

ROWS = [{"prompt": f"add {i} and {i}:", "completion": f" {2 * i}"} for i in range(16)]
STEP = {
    "method": "lora",
    "data": "data.jsonl",
    "lora": {"r": 4},
    "max_steps": 4,  # one epoch of 16 rows at 4 per step
    "batch_size": 2,  # per process
    "learning_rate": 1e-2,
    "save_steps": 2,
}
TOLERANCE = 1e-6


def _recipe(root: Path, **changes: object) -> Path:
    import yaml

    step = {"base": str(root / "base"), **STEP, **changes}
    path = root / "r.yaml"
    path.write_text(yaml.safe_dump({"train": {"skill": step}}, sort_keys=False))
    return path


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    make_model(tmp_path / "base", layers=1)
    write_jsonl(tmp_path / "data.jsonl", ROWS)
    return tmp_path


def _lossless(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "lossless", "run", "r.yaml", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _adapter(base: Path, adapter: Path) -> dict[str, object]:
    """The LoRA weights as peft loads them onto the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _farthest(a: dict[str, object], b: dict[str, object]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[n] - b[n]).abs().max()) for n in a)  # type: ignore[operator]


def _train_here(root: Path, batch_size: int) -> Path:
    out = root / f"one-process-batch-{batch_size}"
    step = build_train("skill", {**STEP, "batch_size": batch_size})
    run_train(step, base_dir=root / "base", out_dir=out, recipe_dir=root, quiet=True)
    return out


@pytest.mark.slow
def test_two_processes_equal_one_process_with_twice_the_batch(world: Path) -> None:
    _recipe(world)
    done = _lossless(world, "--launcher", "accelerate", "--num-processes", "2")
    assert done.returncode == 0, done.stderr
    out = world / ".lossless" / "r" / "skill"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["processes"], metrics["steps"], metrics["examples"]) == (2, 4, 16)
    # Rank 0 alone draws the bar (printed once when stderr is no terminal), and the
    # checkpoints that made resuming possible are gone before publishing, as for one process.
    assert done.stderr.count("train skill ━") == 1, done.stderr
    assert not (out / "checkpoints").exists()
    manifest = json.loads((out / "lossless-manifest.json").read_text())
    from lossless.tensors.writer import sha256_file

    for name in ("adapter_model.safetensors", "adapter_config.json", "metrics.json"):
        assert manifest["files"][name] == sha256_file(out / name)
    assert (world / ".lossless" / "r" / ".skill.launch.log").read_text().strip()

    launched = _adapter(world / "base", out)
    expected = _adapter(world / "base", _train_here(world, batch_size=4))
    alone = _adapter(world / "base", _train_here(world, batch_size=2))
    assert _farthest(launched, expected) < TOLERANCE
    assert _farthest(launched, alone) > 1e-3

    # A second run finds the step fresh: nothing is launched, the output is untouched.
    from lossless.api import run
    from lossless.engine.context import Launch

    before = (out / "adapter_model.safetensors").stat().st_mtime_ns
    statuses = run(world / "r.yaml", quiet=True, launch=Launch("accelerate", 2))
    assert statuses["skill"].state == "fresh"
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_fsdp_on_cpus_is_refused_by_the_ranks_quietly_and_nothing_is_published(
    world: Path,
) -> None:
    """accelerate runs CPU processes with DDP and drops an FSDP plugin without a word; the
    ranks see that the recipe's FSDP settings reached transformers and were not used."""
    _recipe(
        world,
        fsdp=["shard_grad_op", "auto_wrap"],
        fsdp_config={"fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer"},
    )
    done = _lossless(world, "-q", "--launcher", "torchrun", "--num-processes", "2")
    assert done.returncode == 1
    assert done.stdout == ""
    # -q: the error alone, nothing of the ranks' own output. The fsdp_config shown is what
    # transformers made of the recipe's keys (prefix dropped, shard_grad_op translated).
    first, hint, end = done.stderr.split("\n")
    assert first.startswith("error: train.skill.fsdp: transformers got fsdp_config {")
    assert "'transformer_layer_cls_to_wrap': ['LlamaDecoderLayer']" in first
    assert "'reshard_after_forward': False" in first
    assert first.endswith("but accelerate runs these 2 processes as MULTI_CPU, not FSDP")
    assert (
        hint == "  hint: FSDP shards over GPUs; on CPUs, drop `fsdp:` (the processes then use DDP)"
    )
    assert end == ""
    work = world / ".lossless" / "r"
    assert not (work / "skill").exists() and not (work / ".state" / "skill.json").exists()


def test_a_rank_that_crashes_is_reported_by_exit_code_and_log_tail(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lossless.engine.context import Launch
    from lossless.errors import LosslessError
    from lossless.training import launch

    crash = "import sys; print('loading'); sys.exit('RuntimeError: gloo: connection reset')"
    monkeypatch.setattr(launch, "command", lambda *_: [sys.executable, "-c", crash])
    log = world / ".skill.launch.log"
    with pytest.raises(LosslessError) as info:
        launch.run_launched(
            build_train("skill", STEP),
            Launch("torchrun", 2),
            base_dir=world / "base",
            teacher_dir=None,
            out_dir=world / "partial",
            recipe_dir=world,
            log=log,
            quiet=True,
            seed=None,
        )
    assert info.value.message == (
        "train skill: torchrun exited with code 1; the last lines of its log:\n"
        "  loading\n"
        "  RuntimeError: gloo: connection reset"
    )
    assert info.value.hint == f"the whole log: {log}"
    assert "connection reset" in log.read_text()


def test_last_lines_drop_terminal_escapes_and_redrawn_bars() -> None:
    from lossless.training.launch import last_lines

    tail = b"a\n\x1b[2K\rbar 1/4\rbar 4/4\n\n" + b"".join(b"line %d\n" % i for i in range(20))
    assert last_lines(tail, 3) == ["line 17", "line 18", "line 19"]
    assert last_lines(tail[:30]) == ["a", "bar 1/4", "bar 4/4", "line 0"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-processes", "2"], "--num-processes is a launcher's setting, and no --launcher"),
        (["--config-file", "a.yaml"], "--config-file is a launcher's setting, and no --launcher"),
        (["--launcher", "torchrun", "--config-file", "r.yaml"], "--config-file is accelerate's"),
        (["--launcher", "accelerate", "--config-file", "no.yaml"], "--config-file no.yaml: no"),
        (["--launcher", "torchrun", "--num-processes", "0"], "--num-processes 0: needs at least 1"),
    ],
)
def test_launch_flags_are_checked_before_anything_runs(
    world: Path,
    flags: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lossless.cli import main

    _recipe(world)
    monkeypatch.chdir(world)
    assert main(["run", "r.yaml", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (world / ".lossless").exists()


def test_a_launcher_that_is_not_installed_is_named(
    world: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lossless.cli import main
    from lossless.training import launch

    monkeypatch.setitem(launch.LAUNCHERS, "accelerate", "accelerate.commands.no_such_launch")
    _recipe(world)
    monkeypatch.chdir(world)
    assert main(["run", "r.yaml", "--launcher", "accelerate"]) == 2
    err = capsys.readouterr().err
    assert "--launcher accelerate: accelerate.commands.no_such_launch is not importable" in err
    assert "hint: pip install accelerate" in err


def _two_steps(root: Path, **second: object) -> None:
    import yaml

    first = {"base": str(root / "base"), **STEP}
    steps = {"first": first, "sharded": {**first, **second}}
    (root / "r.yaml").write_text(yaml.safe_dump({"train": steps}, sort_keys=False))


def test_sharding_keys_without_a_launcher_stop_the_run_before_it_starts(world: Path) -> None:
    from lossless.api import run
    from lossless.errors import LosslessError

    _two_steps(world, fsdp=True)
    with pytest.raises(LosslessError) as info:
        run(world / "r.yaml", quiet=True)
    assert info.value.message == (
        "train.sharded.fsdp: fsdp shards the model over several processes, and this run trains in one"
    )
    assert "--launcher accelerate --num-processes N" in str(info.value.hint)
    assert not (world / ".lossless" / "r" / "first").exists()  # nothing ran first


def test_deepspeed_that_is_not_installed_stops_the_run_before_it_starts(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from lossless.api import run
    from lossless.engine.context import Launch
    from lossless.errors import LosslessError

    (world / "ds_z2.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    _two_steps(world, deepspeed="ds_z2.json")
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "deepspeed" else found(name, *a),
    )
    with pytest.raises(LosslessError) as info:
        run(world / "r.yaml", quiet=True, launch=Launch("accelerate", 2))
    assert info.value.message == "train.sharded.deepspeed: the deepspeed package is not installed"
    assert info.value.hint == "pip install deepspeed (or drop `deepspeed:` from the step)"
    assert not (world / ".lossless" / "r" / "first").exists()


def test_the_deepspeed_config_is_an_input_of_the_step(world: Path) -> None:
    """Its content is in the step's fingerprint, so editing it retrains the step."""
    from lossless.engine.context import RunOptions
    from lossless.engine.runner import Runner
    from lossless.validation.recipe_check import load_recipe

    config = world / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    _recipe(world, deepspeed="ds.json")
    recipe, _ = load_recipe(world / "r.yaml")
    before = Runner(recipe, RunOptions()).fingerprint(recipe.step("skill"))
    assert "data:ds.json" in before.components
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    after = Runner(recipe, RunOptions()).fingerprint(recipe.step("skill"))
    assert after.changes_from(before.components) == ["data:ds.json: changed"]


def test_fsdp_keys_reach_the_trainer_arguments(tmp_path: Path) -> None:
    """The step's keys → SFTConfig, as transformers reads them (its FSDP plugin arguments)."""
    from trl import SFTConfig

    from lossless.training.distributed import distributed_arguments

    step = build_train(
        "t",
        {
            **STEP,
            "fsdp": "shard_grad_op offload auto_wrap",
            "fsdp_config": {"fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer"},
        },
    )
    kwargs = distributed_arguments(step.settings, tmp_path)
    assert kwargs == {
        "fsdp": True,
        "fsdp_config": {
            "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
            "reshard_after_forward": False,
            "cpu_offload": True,
        },
        "ddp_find_unused_parameters": False,
    }
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)
    assert args.fsdp_plugin_args == {
        **args.fsdp_plugin_args,
        "fsdp_version": 2,
        "reshard_after_forward": False,
        "cpu_offload": True,
        "transformer_cls_names_to_wrap": "LlamaDecoderLayer",
    }


def test_a_deepspeed_config_reaches_the_trainer_arguments_as_a_path(tmp_path: Path) -> None:
    from lossless.training.distributed import distributed_arguments

    (tmp_path / "ds.json").write_text("{}")
    step = build_train("t", {**STEP, "method": "full", "deepspeed": "ds.json"})
    assert distributed_arguments(step.settings, tmp_path) == {
        "deepspeed": str((tmp_path / "ds.json").resolve())
    }


@pytest.mark.slow
def test_a_launched_step_resumes_from_the_checkpoints_in_its_partial_dir(
    world: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The launch path end to end with one rank and no launcher (the worker run as a plain
    process): the newest complete checkpoint is resumed from, a torn one is discarded first."""
    from lossless.engine.context import Launch
    from lossless.training import launch

    partial = world / "partial"
    step = build_train("skill", {**STEP, "batch_size": 4})
    first = run_train(step, base_dir=world / "base", out_dir=partial, recipe_dir=world, quiet=True)
    expected = _adapter(world / "base", partial)
    (partial / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()  # a torn save
    for name in ("adapter_model.safetensors", "metrics.json"):
        (partial / name).unlink()
    monkeypatch.setattr(
        launch, "command", lambda _, spec: [sys.executable, "-m", launch.WORKER, str(spec)]
    )
    capsys.readouterr()
    again = launch.run_launched(
        step,
        Launch("torchrun", 1),
        base_dir=world / "base",
        teacher_dir=None,
        out_dir=partial,
        recipe_dir=world,
        log=world / "launch.log",
        quiet=True,
        seed=None,
    )
    assert capsys.readouterr().err == ""  # quiet: discarded without a word, by no rank
    # the torn one was discarded and saved again, whole, by the resumed run
    assert (partial / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
    assert (again["resumed_from"], again["steps"], again["processes"]) == ("checkpoint-2", 4, 1)
    assert again["losses"][:2] == first["losses"][:2]
    assert _farthest(_adapter(world / "base", partial), expected) < TOLERANCE
