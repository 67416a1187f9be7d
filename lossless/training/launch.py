"""Train steps under `accelerate launch` or `torchrun` (`lossless run --launcher ...`).

The run stays in this process: it orders the steps, runs every merge, apply and eval itself, and
caches and publishes as always. Only a train step goes to the launcher, which starts N ranks of
`python -m lossless.training.worker SPEC`; each rank builds the same TrainSettings and trains
through transformers' Trainer, which takes DDP, FSDP or DeepSpeed from accelerate. Rank 0 writes
the output into the step's partial dir, exactly what one process writes (checkpoints there too,
so an interrupted run resumes); this process checks it, and the runner publishes it.

Why a child process rather than a library call: accelerate and torchrun start, watch and stop the
ranks themselves (one failing rank stops the others), and a user's accelerate config file is
read by `accelerate launch` alone. The child's output is copied to a log beside the step's
output (`.<step>.launch.log`) and, unless -q, to the terminal, where rank 0 draws the bar.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lossless.engine.context import Launch, RunOptions
from lossless.errors import LosslessError
from lossless.recipe.model import TrainStep
from lossless.training.distributed import uses_sharding

# The launcher's module, run with this interpreter so the ranks see the same packages.
LAUNCHERS = {"accelerate": "accelerate.commands.launch", "torchrun": "torch.distributed.run"}
WORKER = "lossless.training.worker"
TAIL_LINES = 15


def launcher_problem(launch: Launch) -> tuple[str, str | None] | None:
    """(message, hint) when `launch` cannot start, else None. No torch import."""
    if launch.launcher not in LAUNCHERS:
        return f"--launcher {launch.launcher}: not a launcher", f"use {' or '.join(LAUNCHERS)}"
    if launch.num_processes is not None and launch.num_processes < 1:
        return f"--num-processes {launch.num_processes}: needs at least 1", None
    if launch.config_file is not None:
        if launch.launcher != "accelerate":
            return "--config-file is accelerate's; torchrun reads none", "drop --config-file"
        if not Path(launch.config_file).is_file():
            return (
                f"--config-file {launch.config_file}: no such file",
                "`accelerate config` writes one",
            )
    module = LAUNCHERS[launch.launcher]
    if not _module_exists(module):
        package = module.split(".")[0]
        return (
            f"--launcher {launch.launcher}: {module} is not importable here",
            f"pip install {package}" if package == "accelerate" else "install torch",
        )
    return None


def _module_exists(module: str) -> bool:
    """Whether `package.sub.name` is installed, found without importing the package (accelerate
    and torch take seconds to import, and `--help`-fast checks should not)."""
    package, *inner = module.split(".")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        Path(root, *inner).with_suffix(".py").is_file() for root in spec.submodule_search_locations
    )


def check_launchable(step: TrainStep, options: RunOptions) -> None:
    """Before the run starts: a step that shards its model needs a launcher, and DeepSpeed
    needs deepspeed installed (it is no dependency of lossless)."""
    s = step.settings
    key = uses_sharding(s.fsdp, s.deepspeed)
    if key is not None and options.launch is None:
        raise LosslessError(
            f"train.{step.name}.{key}: {key} shards the model over several processes, "
            "and this run trains in one",
            hint="run it with `lossless run --launcher accelerate --num-processes N` (N GPUs)",
        )
    if s.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise LosslessError(
            f"train.{step.name}.deepspeed: the deepspeed package is not installed",
            hint="pip install deepspeed (or drop `deepspeed:` from the step)",
        )
    if options.launch is not None:
        problem = launcher_problem(options.launch)
        if problem is not None:
            raise LosslessError(problem[0], hint=problem[1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def command(launch: Launch, spec: Path) -> list[str]:
    """The launcher's command line for one train step.

    accelerate without a config file: `--multi_gpu` for several processes, since that is its
    torch.distributed launch on CPUs too (its `--cpu` path needs MPI), plus the values it would
    otherwise warn about and a free port, so two runs on one machine do not collide. torchrun:
    `--standalone` (one machine, a free rendezvous port)."""
    n = launch.num_processes
    if launch.launcher == "torchrun":
        head = ["--standalone", "--nproc-per-node", str(n or 1)]
    elif launch.config_file is not None:
        head = ["--config_file", str(launch.config_file)]
        head += ["--num_processes", str(n)] if n else []
    else:
        head = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if n and n > 1:
            head += ["--multi_gpu", "--num_processes", str(n)]
            head += ["--main_process_port", str(_free_port())]
        elif n:
            head += ["--num_processes", str(n)]
    return [sys.executable, "-m", LAUNCHERS[launch.launcher], *head, "-m", WORKER, str(spec)]


def _environment(launch: Launch, quiet: bool) -> dict[str, str]:
    """This lossless on the ranks' path; the cores shared out among the ranks (as accelerate
    does on CPUs; torchrun would set 1 with a banner); rank 0's rich bar live when our stderr
    is a terminal."""
    env = dict(os.environ)
    env.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (launch.num_processes or 1)))
    )
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if not quiet and sys.stderr.isatty():
        import shutil

        env.update(TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
        env["COLUMNS"] = str(shutil.get_terminal_size().columns)
    return env


def run_launched(
    step: TrainStep,
    launch: Launch,
    *,
    base_dir: Path | None,
    teacher_dir: Path | None,
    out_dir: Path,
    recipe_dir: Path,
    log: Path,
    quiet: bool,
    seed: int | None,
) -> dict[str, Any]:
    """Train `step` on the launcher's ranks into `out_dir`; its metrics, once checked."""
    from lossless.training.checkpoints import newest_complete

    # torn checkpoints go here, not in N ranks at once
    newest_complete(out_dir / "checkpoints", quiet=quiet)
    with tempfile.TemporaryDirectory(prefix="lossless-launch-") as scratch:
        spec = Path(scratch) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "name": step.name,
                    "block": step.block,
                    "base_dir": str(base_dir) if base_dir else None,
                    "teacher_dir": str(teacher_dir) if teacher_dir else None,
                    "out_dir": str(out_dir),
                    "recipe_dir": str(recipe_dir),
                    "quiet": quiet,
                    "seed": seed,
                    # checked by the ranks; torchrun's default is 1, accelerate's its own
                    "processes": launch.num_processes
                    or (1 if launch.launcher == "torchrun" else None),
                    "errors": scratch,
                },
                default=str,
            )
        )
        code, tail = _stream(command(launch, spec), _environment(launch, quiet), log, quiet)
        if code != 0:
            raise _failure(step, launch, code, tail, Path(scratch), log)
    return _checked_output(step, out_dir, log)


def _stream(cmd: list[str], env: dict[str, str], log: Path, quiet: bool) -> tuple[int, bytes]:
    """Run `cmd`, its output into `log` (and to stderr unless quiet); (exit code, its tail)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tail = b""
    out = getattr(sys.stderr, "buffer", None)
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert process.stdout is not None
        try:
            while chunk := process.stdout.read1(1 << 16):  # type: ignore[attr-defined]
                sink.write(chunk)
                tail = (tail + chunk)[-(1 << 14) :]
                if not quiet:
                    if out is not None:
                        out.write(chunk)
                        out.flush()
                    else:  # a replaced stderr (a test's capture) takes text
                        sys.stderr.write(chunk.decode(errors="replace"))
        except BaseException:  # Ctrl-C: the ranks go too, then the interrupt goes on
            process.terminate()
            process.wait()
            raise
        return process.wait(), tail


_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def last_lines(tail: bytes, count: int = TAIL_LINES) -> list[str]:
    """The last `count` non-empty lines of a log's tail, without terminal escapes."""
    text = _ESCAPES.sub(b"", tail).decode(errors="replace")
    lines = [line.rstrip() for line in re.split(r"[\r\n]+", text)]
    return [line for line in lines if line.strip()][-count:]


def _failure(
    step: TrainStep, launch: Launch, code: int, tail: bytes, scratch: Path, log: Path
) -> LosslessError:
    """A rank's own LosslessError when one wrote it (the lowest rank's), else the exit code
    and the last lines of the log."""
    reports = sorted(scratch.glob("error-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if reports:
        report = json.loads(reports[0].read_text())
        return LosslessError(report["message"], hint=report.get("hint"))
    lines = "\n".join(f"  {line}" for line in last_lines(tail))
    return LosslessError(
        f"train {step.name}: {launch.launcher} exited with code {code}; "
        f"the last lines of its log:\n{lines}",
        hint=f"the whole log: {log}",
    )


def _checked_output(step: TrainStep, out_dir: Path, log: Path) -> dict[str, Any]:
    """Rank 0 wrote metrics.json last; without it, or without weights, nothing is published."""
    try:
        metrics = json.loads((out_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = None
    weights = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
    if not isinstance(metrics, dict) or not any((out_dir / w).is_file() for w in weights):
        hint = f"the whole log: {log}"
        if step.settings.deepspeed is not None:
            hint = (
                "ZeRO-3 saves full weights only with `stage3_gather_16bit_weights_on_model_save: true`; "
                + hint
            )
        raise LosslessError(
            f"train {step.name}: the launched processes exited cleanly but left no "
            f"{'weights' if isinstance(metrics, dict) else 'metrics.json'} in {out_dir}",
            hint=hint,
        )
    return metrics
