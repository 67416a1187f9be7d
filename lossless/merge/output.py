"""A merged model's output directory, built whole beside the target and renamed into place.

Layout (Hugging Face's, loadable by `AutoModelForCausalLM.from_pretrained`):
    config.json, generation_config.json, model*.safetensors (+ index), tokenizer files with the
    chat template in tokenizer_config.json, README.md (model card embedding the recipe),
    lossless.yaml (+ mergekit_config.yml for a plain mergekit config), lossless-manifest.json.

`assemble_output` writes all of it into a partial directory (the runner's, see
`engine/publish.py`: named from the fingerprint, so a rerun of the same merge finds it and the
executor resumes at the first unfinished shard) and returns the shard hashes it already knows;
publishing (manifest last, one rename) is the runner's. `build_output` does both, for callers
without a runner (tests, benchmarks).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossless.engine.publish import check_not_input, open_partial, publish
from lossless.errors import LosslessError
from lossless.merge.device import CPU, MergeDevice
from lossless.merge.executor import JOURNAL, execute
from lossless.merge.jobs import MergePlan
from lossless.merge.model_card import render_model_card
from lossless.tensors.sizes import DEFAULT_SHARD_SIZE
from lossless.tensors.source import TensorSource

if TYPE_CHECKING:
    from lossless.hub.cards import Lineage

RECIPE_FILE = "lossless.yaml"
MERGEKIT_FILE = "mergekit_config.yml"
# What save_pretrained writes for a tokenizer; copied when present in the tokenizer source.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)


def build_output(
    plan: MergePlan,
    sources: Mapping[str, TensorSource],
    out_dir: Path,
    *,
    fingerprint: str,
    input_dirs: Sequence[Path] = (),
    **options: Any,
) -> Path:
    """Merge `plan` into a finished model at `out_dir` (replacing an older output there): the
    partial dir, `assemble_output`, then `publish`. Options are `assemble_output`'s."""
    out_dir = Path(out_dir)
    tokenizer_dir = options.get("tokenizer_dir")
    check_not_input(out_dir, [*input_dirs, *([tokenizer_dir] if tokenizer_dir else [])])
    if out_dir.exists() and not out_dir.is_dir():
        raise LosslessError(f"output path {out_dir} exists and is not a directory")
    _tokenizer_files(options.get("chat_template"), tokenizer_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = open_partial(out_dir, fingerprint)
    options.setdefault("name", out_dir.name)
    known = assemble_output(plan, sources, partial, **options)
    publish(partial, out_dir, fingerprint, known)
    return out_dir


def assemble_output(
    plan: MergePlan,
    sources: Mapping[str, TensorSource],
    tmp: Path,
    *,
    name: str,
    recipe_text: str,
    tokenizer_dir: Path | None = None,
    chat_template: str | None = None,
    base_models: Sequence[str] = (),
    method: str | None = None,
    mergekit_config: bool = False,
    write_model_card: bool = True,
    lock_text: str | None = None,
    lineage: Lineage | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_threads: int | None = None,
    seed: int | None = None,
    quiet: bool = False,
    memory: int | None = None,
    device: MergeDevice = CPU,
) -> dict[str, str]:
    """Merge `plan` into the partial dir `tmp` with config, tokenizer, recipe and card; return
    the sha256 of the shards (hashed while written). `chat_template` is already resolved (see
    `resolve_chat_template`); `tokenizer_dir` is the directory whose tokenizer files are copied
    (None: no tokenizer); `name` is the output's name, for the model card; `lineage` what it derives
    from (hub/cards.py; None: `base_models` and the plan's models, by name)."""
    tokenizer_files = _tokenizer_files(chat_template, tokenizer_dir)
    execute(
        plan,
        sources,
        tmp,
        shard_size=shard_size,
        num_threads=num_threads,
        seed=seed,
        quiet=quiet,
        memory=memory,
        device=device,
    )
    dtype = _output_dtype(plan)
    config_key = plan.config_source or (plan.jobs[0].sources[0].model if plan.jobs else None)
    config_src = sources.get(config_key) if config_key else None
    config = dict(config_src.config) if config_src else {}
    config.update(plan.config_updates)
    if dtype:
        config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
    _write_json(tmp / "config.json", config)
    src_dir = getattr(config_src, "path", None)
    if src_dir and (Path(src_dir) / "generation_config.json").is_file():
        shutil.copyfile(Path(src_dir) / "generation_config.json", tmp / "generation_config.json")
    if tokenizer_dir:
        _copy_tokenizer(Path(tokenizer_dir), tmp, tokenizer_files)
    if chat_template:
        _set_chat_template(tmp, chat_template)
    (tmp / RECIPE_FILE).write_text(recipe_text)
    if mergekit_config:
        (tmp / MERGEKIT_FILE).write_text(recipe_text)
    if write_model_card:
        models = sorted({r.model for job in plan.jobs for r in job.sources})
        card = render_model_card(
            recipe_text,
            name=name,
            base_models=base_models,
            merged_models=models,
            method=method,
            lock_text=lock_text,
            lineage=lineage,
        )
        (tmp / "README.md").write_text(card)
    known = _journal_hashes(tmp)
    (tmp / JOURNAL).unlink(missing_ok=True)
    return known


def _tokenizer_files(chat_template: str | None, tokenizer_dir: Path | None) -> list[str]:
    """The tokenizer files to copy, checked before any tensor is merged: a merge of many
    minutes must not end in an error a glance at the inputs could give."""
    if chat_template and not tokenizer_dir:
        raise LosslessError(
            "a chat_template was given but no tokenizer is copied to the output",
            hint="set tokenizer_source (or pass --copy-tokenizer) so the template has a tokenizer",
        )
    if not tokenizer_dir:
        return []
    copied = [name for name in TOKENIZER_FILES if (Path(tokenizer_dir) / name).is_file()]
    if "tokenizer_config.json" not in copied:
        raise LosslessError(
            f"no tokenizer in {tokenizer_dir} (no tokenizer_config.json) to copy to the output",
            hint="set tokenizer_source to a model that ships a tokenizer, "
            "or pass --no-copy-tokenizer to write the merge without one",
        )
    return copied


def _output_dtype(plan: MergePlan) -> str | None:
    """The dtype most tensors are written in (e.g. "bfloat16"), for config.json."""
    counts: dict[str, int] = {}
    for job in plan.jobs:
        counts[job.out_dtype] = counts.get(job.out_dtype, 0) + 1
    return max(counts, key=lambda d: counts[d]) if counts else None


def _copy_tokenizer(src: Path, dst: Path, copied: Sequence[str]) -> None:
    for name in copied:
        shutil.copyfile(src / name, dst / name)
    if (src / "chat_templates").is_dir():
        shutil.copytree(src / "chat_templates", dst / "chat_templates")


def _set_chat_template(out: Path, template: str) -> None:
    """Put the template in tokenizer_config.json. transformers prefers a `chat_template.jinja`
    file over that key when loading, so copied template files are removed."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["chat_template"] = template
    _write_json(path, config)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    (out / "chat_template.json").unlink(missing_ok=True)
    shutil.rmtree(out / "chat_templates", ignore_errors=True)


def _journal_hashes(tmp: Path) -> dict[str, str]:
    """Shard hashes the executor already computed while writing (saves re-reading GBs)."""
    known: dict[str, str] = {}
    journal = tmp / JOURNAL
    if journal.is_file():
        for line in journal.read_text().splitlines()[1:]:
            entry = json.loads(line)
            known[entry["file"]] = entry["sha256"]
    return known


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
