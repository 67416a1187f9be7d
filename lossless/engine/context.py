"""What a run is told (`RunOptions`, from the command line) and what a step is given (`StepContext`).

Every step kind is one function `run(step, ctx)` (see `steps/__init__.py`); the context is frozen
and holds all it may use, so a step never reaches back into the runner:

    def run(step: TrainStep, ctx: StepContext) -> None:
        base_dir = ctx.resolver.model_dir(step.base)     # inputs, through the resolver
        ...write everything into ctx.out_dir...          # the partial dir; the runner publishes
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lossless.merge.device import CPU, MergeDevice

if TYPE_CHECKING:
    from lossless.engine.resolver import Resolver
    from lossless.recipe.model import Recipe


WORK_ROOT = ".lossless"


def default_work_dir(recipe_path: str | Path) -> Path:
    """`.lossless/<recipe name>/` beside the recipe, so recipes in one folder never share (or
    overwrite) each other's step outputs. A `.lossless/` written by an older lossless, with the
    steps of every recipe of the folder directly in it (`.lossless/.state/`), keeps working as it
    is; `is_shared_legacy` lets the runner say so."""
    root = Path(recipe_path).resolve().parent / WORK_ROOT
    return root if is_shared_legacy(root) else root / Path(recipe_path).stem


def is_shared_legacy(work_dir: Path) -> bool:
    return work_dir.name == WORK_ROOT and (work_dir / ".state").is_dir()


@dataclass(frozen=True)
class Launch:
    """`--launcher`: train steps run under `accelerate launch` or `torchrun` (training/launch.py)."""

    launcher: str  # accelerate | torchrun
    num_processes: int | None = None  # None: the launcher's own default (or --config-file's)
    config_file: Path | None = None  # accelerate's config (`accelerate config` writes one)


@dataclass(frozen=True)
class RunOptions:
    """Everything from the command line that changes what a run does."""

    work_dir: Path | None = None
    out: Path | None = None  # the final merge's output, from the command line
    force: frozenset[str] = frozenset()
    only: frozenset[str] = frozenset()
    seed: int | None = None
    shard_size: int = 5_000_000_000
    memory: int | None = None  # merges' peak-memory budget in bytes (`--memory`); None: default
    device: MergeDevice = CPU  # where merge math runs (`--device`, merge/device.py)
    num_threads: int | None = None
    allow_crimes: bool = False
    copy_tokenizer: bool = True
    write_model_card: bool = True
    allow_pickle: bool = False
    allow_non_finite: bool = False  # merge NaN/Inf weights instead of refusing them
    trust_remote_code: bool = False
    quiet: bool = False
    cache_dir: str | None = None
    locked: bool = False  # refuse to run when an input resolves differently from RECIPE.lock
    write_lock: bool = True
    overwrite: bool = False  # publish over a folder lossless did not write (moved aside, kept)
    verify: bool = False  # a fresh step's files must match their recorded sha256, not only sizes
    wait: bool = False  # wait for a run lock held by another process instead of failing
    launch: Launch | None = None  # train steps in a launcher's processes; None: in this process
    push: bool = True  # upload each `push_to_hub:` output after the run (`--no-push`: False)
    force_push: bool = False  # push even after a failed gate (`--force-push`)


@dataclass(frozen=True)
class StepContext:
    """One step's view of the run: where to write, what it reads through, what it is told."""

    recipe: Recipe
    options: RunOptions
    resolver: Resolver
    out_dir: Path  # the partial directory to write into
    target: Path  # where the output will live once published (for names and messages)
    fingerprint: str
    lock_text: str | None = None  # RECIPE.lock's text, embedded in model cards
    # The fingerprint's named parts (settings, options, step:x, model:x, data:x), so a step
    # can key caches of its own on what it reads (a merge search's trials), and the work dir.
    fingerprint_parts: Mapping[str, str] = field(default_factory=dict)
    work_dir: Path | None = None

    @property
    def recipe_dir(self) -> Path:
        return Path(self.recipe.path).resolve().parent

    @property
    def recipe_text(self) -> str:
        if self.recipe.text is not None:  # `--set` overrides applied
            return self.recipe.text
        return Path(self.recipe.path).read_text()

    def input_dirs(self, step: str) -> list[Path]:
        return self.resolver.input_dirs(step)


# What a step may return: sha256 of files it already hashed while writing (rel path → hex).
KnownHashes = Mapping[str, str]
