"""Every input of a recipe, found by one walk over its YAML documents.

A recipe reads models (hub ids, local directories, other steps), adapters (`model+lora`, apply
steps) and data (training and eval files, `init:` configs, tokenizer corpora, prompts, lm-eval
task folders). A data value that names a step reads that `generate:` step's rows: like a model
naming a step, it is a dependency (a graph edge, the step's fingerprint), not a file to hash or lock. Validation,
the step graph, `RECIPE.lock`, fingerprints and the runner all need this list; they all take it
from `walk_inputs`, so a key that names an input is known in exactly one place (here).

The walk runs on plain documents, before or after validation: it reads defensively and skips
what is not the shape it expects (the schema pass reports those). Each `Input` carries where it
is written, for `file:line:col` messages:

    >>> [(i.owner, i.role, i.value) for i in walk_inputs([{"merge_method": "linear",
    ...     "models": [{"model": "org/a+org/lora"}]}])]
    [('merged', 'models[0]', 'org/a+org/lora')]
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lossless.errors import YamlPath, format_yaml_path
from lossless.recipe.model import DEFAULT_MERGE_NAME, ModelRef
from lossless.recipe.references import data_value

InputKind = Literal["model", "data"]

# Keys of a document that make it a merge stage, and `tokenizer_source` words that are no model.
MERGE_SHAPE_KEYS = ("models", "slices", "modules", "merge_method")
TOKENIZER_KEYWORDS = frozenset({"base", "union"})
STEP_SECTIONS = ("generate", "train", "apply", "eval")


@dataclass(frozen=True)
class Input:
    """One reference a step makes: `value` as written, at `path` = (document index, *keys)."""

    owner: str  # the step (or merge stage) that reads it
    path: YamlPath
    value: str
    kind: InputKind
    # Its role when it is written in another step and read through it: a merge search reads
    # its eval step's reference and data (`search.reference`), at the eval step's `path`.
    read_as: str | None = None

    @property
    def role(self) -> str:
        """Where inside its step, e.g. `models[0]`, `base`, `replay.data`, `distill`, `data.A`."""
        keys = self.path[1:]
        if keys[:1] in tuple((s,) for s in STEP_SECTIONS):
            keys = keys[2:]
        if len(keys) > 1 and keys[-1] == "model":
            keys = keys[:-1]  # models[0].model → models[0]
        return self.read_as or format_yaml_path(keys)

    @property
    def ref(self) -> ModelRef:
        return ModelRef.parse(self.value)

    def names(self) -> list[str]:
        """What this input points at: a data path, or a model (`@rev` kept) and its adapter."""
        if self.kind == "data":
            return [self.value]
        model, _, lora = self.value.partition("+")
        return [n for n in (model, lora) if n]

    def steps_read(self, steps: Collection[str]) -> list[str]:
        """The steps of `steps` this input reads (a step name always wins over a path)."""
        return [name for name in self.names() if name in steps]


def is_merge_document(doc: Mapping[str, Any]) -> bool:
    return any(key in doc for key in MERGE_SHAPE_KEYS)


def stage_name(doc: Mapping[str, Any]) -> str:
    name = doc.get("name")
    return name if isinstance(name, str) else DEFAULT_MERGE_NAME


def step_blocks(doc: Mapping[str, Any], section: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, block) of each well-formed step of a section (`generate:`, `train:`, ...)."""
    block = doc.get(section)
    if isinstance(block, Mapping):
        for name, step in block.items():
            if isinstance(step, Mapping):
                yield str(name), step


def step_names(documents: Sequence[Any]) -> list[str]:
    """Names usable as references, in recipe order (duplicates kept: validation reports them)."""
    names: list[str] = []
    for doc in documents:
        if not isinstance(doc, Mapping):
            continue
        for section in STEP_SECTIONS:
            if isinstance(doc.get(section), Mapping):
                names += [str(k) for k in doc[section]]
        if is_merge_document(doc):
            names.append(stage_name(doc))
    return names


def walk_inputs(documents: Sequence[Any]) -> list[Input]:
    """Every input of every step, in document order."""
    found: list[Input] = []
    evals = {
        name: (d, block)
        for d, doc in enumerate(documents)
        if isinstance(doc, Mapping)
        for name, block in step_blocks(doc, "eval")
    }
    for d, doc in enumerate(documents):
        if not isinstance(doc, Mapping):
            continue
        for name, block in step_blocks(doc, "generate"):
            found += _generate_inputs(name, (d, "generate", name), block)
        for name, block in step_blocks(doc, "train"):
            found += _train_inputs(name, (d, "train", name), block)
        for name, block in step_blocks(doc, "apply"):
            found += _apply_inputs(name, (d, "apply", name), block)
        if is_merge_document(doc):
            found += _merge_inputs(stage_name(doc), d, doc)
            found += _search_inputs(stage_name(doc), doc, evals)
        for name, block in step_blocks(doc, "eval"):
            found += _eval_inputs(name, (d, "eval", name), block)
    return found


def _collect(
    owner: str, path: YamlPath, value: Any, kind: InputKind, *, many: bool = False
) -> list[Input]:
    """A string; with `many`, also a list of them. Data may be `{path: ...}` (with options: a
    weight in a mixture, a hub dataset's `revision`, which becomes part of the reference)."""
    if isinstance(value, str):
        return [Input(owner, path, value, kind)] if value else []
    if many and isinstance(value, list):
        return [x for i, item in enumerate(value) for x in _collect(owner, (*path, i), item, kind)]
    if kind == "data" and isinstance(value, Mapping) and isinstance(value.get("path"), str):
        revision = value.get("revision")
        name = data_value(value["path"], revision if isinstance(revision, str) else None)
        return _collect(owner, (*path, "path"), name if value["path"] else "", kind)
    return []


def _generate_inputs(owner: str, p: YamlPath, block: Mapping[str, Any]) -> list[Input]:
    found = _collect(owner, (*p, "model"), block.get("model"), "model")
    return found + _collect(owner, (*p, "prompts"), block.get("prompts"), "data")


def _train_inputs(owner: str, p: YamlPath, block: Mapping[str, Any]) -> list[Input]:
    found = _collect(owner, (*p, "base"), block.get("base"), "model")
    found += _collect(owner, (*p, "data"), block.get("data"), "data", many=True)
    for extra in ("replay", "ewc"):
        if isinstance(block.get(extra), Mapping):
            data = block[extra].get("data")
            found += _collect(owner, (*p, extra, "data"), data, "data", many=True)
    # DeepSpeed's config file: its content changes the training, so it is hashed and locked.
    found += _collect(owner, (*p, "deepspeed"), block.get("deepspeed"), "data")
    distill = block.get("distill")
    if isinstance(distill, Mapping):  # the teacher: ordered before, locked, fingerprinted
        found += _collect(owner, (*p, "distill", "model"), distill.get("model"), "model")
    init = block.get("init")
    if isinstance(init, Mapping):
        config = init.get("config")
        if isinstance(config, str) and config.endswith(".json"):  # else a preset name
            found += _collect(owner, (*p, "init", "config"), config, "data")
        tokenizer = init.get("tokenizer")
        if isinstance(tokenizer, Mapping):
            corpus = tokenizer.get("train_on")
            where = (*p, "init", "tokenizer", "train_on")
            found += _collect(owner, where, corpus, "data", many=True)
        else:
            found += _collect(owner, (*p, "init", "tokenizer"), tokenizer, "model")
    return found


def _apply_inputs(owner: str, p: YamlPath, block: Mapping[str, Any]) -> list[Input]:
    found = _collect(owner, (*p, "to"), block.get("to"), "model")
    found += _collect(owner, (*p, "adapter"), block.get("adapter"), "model")
    adapters = block.get("adapters")
    for i, use in enumerate(adapters if isinstance(adapters, list) else []):
        if isinstance(use, Mapping):
            found += _collect(owner, (*p, "adapters", i, "adapter"), use.get("adapter"), "model")
    return found


def _merge_inputs(owner: str, d: int, doc: Mapping[str, Any]) -> list[Input]:
    found = _collect(owner, (d, "base_model"), doc.get("base_model"), "model")
    containers: list[tuple[YamlPath, Any]] = [((d,), doc)]
    if isinstance(doc.get("modules"), Mapping):
        containers += [((d, "modules", k), v) for k, v in doc["modules"].items()]
    for prefix, container in containers:
        if not isinstance(container, Mapping):
            continue
        models = container.get("models")
        for i, entry in enumerate(models if isinstance(models, list) else []):
            if isinstance(entry, Mapping):
                found += _collect(
                    owner, (*prefix, "models", i, "model"), entry.get("model"), "model"
                )
        slices = container.get("slices")
        for i, piece in enumerate(slices if isinstance(slices, list) else []):
            if not isinstance(piece, Mapping):
                continue
            found += _collect(
                owner, (*prefix, "slices", i, "base_model"), piece.get("base_model"), "model"
            )
            sources = piece.get("sources")
            for j, source in enumerate(sources if isinstance(sources, list) else []):
                if isinstance(source, Mapping):
                    where = (*prefix, "slices", i, "sources", j, "model")
                    found += _collect(owner, where, source.get("model"), "model")
    source = doc.get("tokenizer_source")
    if source not in TOKENIZER_KEYWORDS:
        found += _collect(owner, (d, "tokenizer_source"), source, "model")
    tokenizer = doc.get("tokenizer")
    if isinstance(tokenizer, Mapping) and tokenizer.get("source") not in TOKENIZER_KEYWORDS:
        found += _collect(owner, (d, "tokenizer", "source"), tokenizer.get("source"), "model")
    return found


def _eval_inputs(owner: str, p: YamlPath, block: Mapping[str, Any]) -> list[Input]:
    found = _collect(owner, (*p, "models"), block.get("models"), "model", many=True)
    found += _collect(owner, (*p, "reference"), block.get("reference"), "model")
    data = block.get("data")
    if isinstance(data, Mapping):
        for dataset, spec in data.items():
            found += _collect(owner, (*p, "data", dataset), spec, "data")
    # lm-eval task folders: their YAMLs (and data kept beside them) are inputs like data files.
    found += _collect(owner, (*p, "include_path"), block.get("include_path"), "data", many=True)
    return found


def _search_inputs(
    owner: str, doc: Mapping[str, Any], evals: Mapping[str, tuple[int, Mapping[str, Any]]]
) -> list[Input]:
    """A merge search measures each trial as its eval step would: it reads that step's
    reference (`reference:`, else its first model) and data, not the eval step's output, so the
    eval step may itself measure this stage without a cycle."""
    search = doc.get("search")
    name = search.get("eval") if isinstance(search, Mapping) else None
    if not isinstance(name, str) or name not in evals:
        return []
    d, block = evals[name]
    p: YamlPath = (d, "eval", name)
    found: list[Input] = []
    if "reference" in block:
        reference = _collect(owner, (*p, "reference"), block.get("reference"), "model")
    elif isinstance(block.get("models"), list) and block["models"]:
        reference = _collect(owner, (*p, "models", 0), block["models"][0], "model")
    else:
        reference = []
    # The stage itself as the reference is reported by validation (search_rules), not a cycle.
    for i in reference:
        if ModelRef.parse(i.value).name != owner:
            found.append(Input(i.owner, i.path, i.value, i.kind, read_as="search.reference"))
    data = block.get("data")
    if isinstance(data, Mapping):
        for dataset, spec in data.items():
            for i in _collect(owner, (*p, "data", dataset), spec, "data"):
                found.append(Input(i.owner, i.path, i.value, i.kind, f"search.data.{dataset}"))
    return found
