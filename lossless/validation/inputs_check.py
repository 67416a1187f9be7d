"""Inputs against the recipe, before any work: each problem at the recipe's file:line:col.

`lossless validate` runs this on every input it can read without the network (local
directories; hub models already in the cache with `--resolve`); `lossless run` runs it again
when a merge or apply step starts, on the directories the run resolved (downloads and the
outputs of earlier steps), before the step writes anything. Only config.json, tokenizer files,
adapter_config.json and safetensors *headers* are read: never weights, never torch.

What is checked, per merge stage: config.json exists and agrees with the weights' shapes;
layer ranges end within each model's layers; the models share one architecture and size
(unless --allow-crimes); their embedding rows agree unless a tokenizer setting lines them up;
without `base_model`, which model gives the output its config and tokenizer when the inputs
differ. Per adapter (`model+lora`, `apply:`): its LoRA ranks agree, its tensors exist in the
target with the shapes they need, its `target_modules` name modules of the target. Per data
input: the file exists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError, YamlPath
from lossless.merge.architecture import (
    TIED_HEADS,
    count_layers,
    layer_count_key,
    layer_prefix,
    layer_tensors,
)
from lossless.recipe.inputs import Input, is_merge_document, stage_name
from lossless.recipe.references import data_kind, local_path
from lossless.validation.adapter_check import check_adapter
from lossless.validation.checker import Checker

# name (without revision) → its directory on this machine, or None when it cannot be read yet.
Locate = Callable[[str], Path | None]

SIZE_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")
EMBEDDINGS = tuple(e for embeds in TIED_HEADS.values() for e in embeds)
CRIMES = "mergekit merges only models of one architecture and size (--allow-crimes overrides)"


@dataclass
class Facts:
    """What a model or adapter directory says about itself, from its small files."""

    directory: Path
    config: dict[str, Any] | None = None  # None: no (readable) config.json
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    defect: str | None = None  # a broken header, index or config.json

    @property
    def layers(self) -> int | None:
        if self.config is not None and layer_count_key(self.config):
            return count_layers(self.config, self.shapes)
        if not self.shapes:
            return None
        return len(layer_tensors(self.shapes, layer_prefix(self.shapes))) or None

    def weight_layers(self) -> int | None:
        return len(layer_tensors(self.shapes, layer_prefix(self.shapes))) if self.shapes else None

    def vocab_rows(self) -> int | None:
        for name in EMBEDDINGS:
            if self.shapes.get(name):
                return self.shapes[name][0]
        value = (self.config or {}).get("vocab_size")
        return value if isinstance(value, int) else None


def read_facts(directory: Path) -> Facts:
    from lossless.tensors.checkpoint import INDEX, SINGLE, _weight_map
    from lossless.tensors.safetensors_header import read_header

    facts = Facts(directory)
    config = directory / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
            facts.config = data if isinstance(data, dict) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            facts.defect = f"{config}: not valid JSON ({error})"
    files = [directory / SINGLE, directory / "adapter_model.safetensors"]
    try:
        if (directory / INDEX).is_file():
            files = [directory / s for s in sorted(set(_weight_map(directory / INDEX).values()))]
        for file in files:
            if file.is_file():
                facts.shapes.update({n: e["shape"] for n, e in read_header(file).items()})
    except LosslessError as error:
        facts.defect = error.message
    return facts


def check_inputs(
    c: Checker, inputs: list[Input], locate: Locate, *, allow_crimes: bool = False
) -> None:
    """Append the problems of every input `locate` finds a directory for to `c.problems`."""
    facts: dict[Path, Facts] = {}

    def find(name: str) -> Facts | None:
        directory = locate(name)
        if directory is None or not directory.is_dir():
            return None
        if directory not in facts:
            facts[directory] = read_facts(directory)
        return facts[directory]

    for d, doc in enumerate(c.docs):
        if isinstance(doc, dict) and is_merge_document(doc):
            owner = stage_name(doc)
            mine = [i for i in inputs if i.owner == owner and i.read_as is None]
            _check_merge_models(c, d, doc, mine, find, allow_crimes)
    for item in inputs:
        d, path = int(item.path[0]), item.path[1:]
        if item.kind == "data":
            _check_data_file(c, d, path, item)
        elif "+" in item.value and item.ref.lora:
            check_adapter(c, d, path, item.ref.lora, item.ref.name, find)
        elif path[:1] == ("apply",) and path[-1] == "adapter":
            to = c.get(d, path[:2]).get("to")
            if isinstance(to, str):
                check_adapter(c, d, path, item.value, to.partition("@")[0], find)


def _check_data_file(c: Checker, d: int, path: YamlPath, item: Input) -> None:
    written = c.get(d, path)  # `{path, revision}` is one reference (`org/set@v1`) in `item`
    value = written if isinstance(written, str) else item.value
    if path[-1] == "prompts":  # semantic.py says it
        return
    if "include_path" in path:  # an lm-eval task folder, never a hub id
        found = local_path(value, c.recipe_dir)
        if found is None or not found.is_dir():
            c.add(
                d,
                path,
                f"task folder `{value}` does not exist"
                + ("" if found is None else " (it is a file, not a folder)"),
                code="missing-path",
                hint="a folder of lm-eval task YAMLs, relative to the recipe's directory "
                "(then the current directory)",
            )
        return
    if data_kind(value, c.step_names, c.recipe_dir) != "local":
        return  # a step's rows, or a hub dataset (`org/name`): read when the step runs
    if local_path(value, c.recipe_dir) is None:
        what = "DeepSpeed config" if item.role == "deepspeed" else "data file"
        c.add(
            d,
            path,
            f"{what} `{value}` does not exist",
            code="missing-path",
            hint="paths are relative to the recipe's directory (then the current directory)",
        )


def _check_merge_models(
    c: Checker,
    d: int,
    doc: dict[str, Any],
    items: list[Input],
    find: Callable[[str], Facts | None],
    allow_crimes: bool,
) -> None:
    models: dict[str, tuple[YamlPath, Facts]] = {}  # name → where first written, its facts
    for item in items:
        path, name = item.path[1:], item.ref.name
        if item.kind != "model" or path[0] in ("tokenizer_source", "tokenizer"):
            continue
        facts = find(name)
        if facts is None or (facts.directory / "adapter_config.json").is_file():
            continue
        first = name not in models
        models.setdefault(name, (path, facts))
        if first and facts.defect:
            c.add(
                d,
                path,
                f"`{name}`: {facts.defect}",
                code="bad-checkpoint",
                hint="the file is corrupt, truncated or hostile; download or re-save the model",
            )
        elif first and facts.config is None and facts.shapes:  # weights, but no config
            c.add(
                d,
                path,
                f"`{name}` has no config.json ({facts.directory})",
                code="missing-config",
                hint="a model directory holds the config.json that save_pretrained writes "
                "beside the weights",
            )
        elif first and facts.config is not None:
            from lossless.tensors.checkpoint import config_problems

            mismatches = config_problems(facts.config, facts.shapes, facts.weight_layers())
            facts.defect = "; ".join(mismatches) or None  # not compared with the others
            for problem in mismatches:
                c.add(
                    d,
                    path,
                    f"`{name}`: {problem}",
                    code="config-mismatch",
                    hint="config.json and the weights come from different models; transformers "
                    "would refuse the merged output",
                )
        lr = c.get(d, path[:-1]).get("layer_range") if path[-1] == "model" else None
        layers = facts.layers
        if (
            layers is not None
            and isinstance(lr, list)
            and len(lr) == 2
            and isinstance(lr[1], int)
            and lr[1] > layers
        ):
            c.add(
                d,
                (*path[:-1], "layer_range"),
                f"layer_range ends at {lr[1]} but `{name}` has {layers} layers",
                expected=f"end <= {layers}",
                got=str(lr[1]),
                code="layer-range",
                hint=f"layer_range is [first, last + 1): at most [0, {layers}] for `{name}`",
            )
    known = {n: (p, f) for n, (p, f) in models.items() if f.config is not None and not f.defect}
    if not allow_crimes:
        _check_same_family(c, d, known)
    _check_vocabularies(c, d, doc, known)
    _check_donor(c, d, doc, known)


def _check_same_family(c: Checker, d: int, models: Mapping[str, tuple[YamlPath, Facts]]) -> None:
    names = list(models)
    for other in names[1:]:
        first = names[0]
        a, b = models[first][1].config or {}, models[other][1].config or {}
        sizes = [f"{k} {a[k]} vs {b[k]}" for k in SIZE_KEYS if k in a and k in b and a[k] != b[k]]
        arch_a, arch_b = a.get("architectures"), b.get("architectures")
        if arch_a and arch_b and arch_a != arch_b:
            message = (
                f"`{first}` is {', '.join(map(str, arch_a))} but `{other}` is "
                f"{', '.join(map(str, arch_b))}: models of different architectures cannot be merged"
            )
        elif sizes:
            message = f"`{first}` and `{other}` differ in size"
        else:
            continue
        c.add(
            d,
            models[other][0],
            message + (f" ({'; '.join(sizes)})" if sizes else ""),
            code="incompatible-models",
            hint=CRIMES,
        )


def _check_vocabularies(
    c: Checker, d: int, doc: dict[str, Any], models: Mapping[str, tuple[YamlPath, Facts]]
) -> None:
    if "tokenizer_source" in doc or "tokenizer" in doc:
        return
    rows = {n: r for n, (_, f) in models.items() if (r := f.vocab_rows()) is not None}
    if len(set(rows.values())) < 2:
        return
    first = next(iter(rows))
    other = next(n for n, r in rows.items() if r != rows[first])
    listing = ", ".join(f"`{n}` has {r}" for n, r in rows.items())
    c.add(
        d,
        models[other][0],
        f"the models' embedding rows differ ({listing}) and no tokenizer setting says how "
        "to line them up",
        code="vocab-mismatch",
        expected=f"{rows[first]} rows, as `{first}`",
        got=str(rows[other]),
        hint="set `tokenizer_source: union` (or `base`, or a model) or a `tokenizer:` block "
        "so embedding rows are lined up token by token",
    )


def _eos(facts: Facts) -> Any:
    generation = facts.directory / "generation_config.json"
    value = (facts.config or {}).get("eos_token_id")
    if value is None and generation.is_file():
        try:
            value = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            value = None
    return value


def _chat_template(facts: Facts) -> str | None:
    jinja = facts.directory / "chat_template.jinja"
    config = facts.directory / "tokenizer_config.json"
    try:
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        if config.is_file():
            value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
            return value if isinstance(value, str) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return None


def _check_donor(
    c: Checker, d: int, doc: dict[str, Any], models: Mapping[str, tuple[YamlPath, Facts]]
) -> None:
    """Without `base_model`, the first model gives the output its config and tokenizer."""
    if "base_model" in doc or len(models) < 2:
        return
    donor = next(iter(models))
    tokenizer_too = "tokenizer_source" not in doc and "tokenizer" not in doc
    eos = {n: _eos(f) for n, (_, f) in models.items()}
    differences = []
    if len({json.dumps(v) for v in eos.values()}) > 1:
        differences.append("eos_token_id (" + ", ".join(f"{n}: {v}" for n, v in eos.items()) + ")")
    if tokenizer_too and len({_chat_template(f) for _, f in models.values()}) > 1:
        differences.append("chat template")
    if not differences:
        return
    what = "config.json and tokenizer" if tokenizer_too else "config.json"
    c.add(
        d,
        models[donor][0],
        f"no `base_model`: the output takes its {what} from `{donor}` (the first model), "
        f"but the models differ in {' and '.join(differences)}",
        severity="warning",
        code="implicit-donor",
        hint="list the model whose config and tokenizer you want first, or name it as "
        "`base_model:`" + ("; `tokenizer_source:` chooses the tokenizer" if tokenizer_too else ""),
    )


# -- adapters -------------------------------------------------------------------------------


def local_locator(recipe_dir: Path | None, step_names: set[str], resolve: bool) -> Locate:
    """For `lossless validate`: local directories; with `resolve`, hub models in the cache."""

    def locate(name: str) -> Path | None:
        if name in step_names:
            return None
        found = local_path(name, recipe_dir)
        if found is not None or not resolve:
            return found
        from lossless.recipe.references import looks_like_hub_id

        if not looks_like_hub_id(name):
            return None
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(name, "config.json")
        if not isinstance(config, str):
            config = try_to_load_from_cache(name, "adapter_config.json")
        return Path(config).parent if isinstance(config, str) else None

    return locate


def check_step(
    recipe_path: str | Path, steps: Collection[str], locate: Locate, *, allow_crimes: bool
) -> None:
    """When a merge or apply step starts: the inputs of `steps` (the step, and the lazy apply
    steps it reads) as the run resolved them (downloads, earlier steps' outputs) against the
    recipe; raises `RecipeInvalid` (exit 2) on an error, before the step writes anything."""
    from lossless.errors import RecipeInvalid
    from lossless.recipe.inputs import step_names, walk_inputs
    from lossless.recipe.yaml_io import parse_documents

    file = str(recipe_path)
    text = Path(recipe_path).read_text(encoding="utf-8")
    documents, _ = parse_documents(text, file)
    c = Checker(file, text.splitlines(), [p for _, p in documents], Path(recipe_path).parent)
    c.docs = [data for data, _ in documents]
    c.step_names = set(step_names(c.docs))
    check_inputs(
        c, [i for i in walk_inputs(c.docs) if i.owner in steps], locate, allow_crimes=allow_crimes
    )
    if any(p.severity == "error" for p in c.problems):
        raise RecipeInvalid([p for p in c.problems if p.severity == "error"])


def run_locator(resolver: Any) -> Locate:
    """For a running step: a step's published output, else the local or downloaded directory."""

    def locate(name: str) -> Path | None:
        if name in resolver.recipe.step_names:
            found = resolver.step_dirs.get(name)
            return Path(found) if found is not None else None  # a lazy apply step: no files
        return Path(resolver.external_dir(name))

    return locate
