"""The recipe as frozen data: what to train, apply, merge and evaluate, with no validation logic.

`validation/` checks a loaded YAML document, `build.py` builds these, `graph.py` connects them
into a DAG; the step functions in `steps/` receive them. A train step's settings are typed
(`training/settings.py`); eval options stay a plain mapping, already checked against the schema.

Recipe layout (one YAML document, or several mergekit-multi style documents each with a `name`):
    generate: {step_name: {...}}        # GenerateStep (rehearsal data sampled from a model)
    train:  {step_name: {...}}          # TrainStep
    apply:  {step_name: {...}}          # ApplyStep
    <mergekit keys>                     # one MergeStep per document (named `name`, default "merged")
    eval:   {step_name: {...}}          # EvalStep
    output: path/to/final/model         # optional; `lossless run RECIPE OUT` overrides it
    push_to_hub: org/name               # optional, here or on a train/apply step: PushTarget
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lossless.training.settings import InitSettings, TrainSettings

if TYPE_CHECKING:
    from lossless.recipe.inputs import Input

# A mergekit parameter value: a scalar, a gradient (list of numbers interpolated over the layers of
# a slice), or a list of {filter, value} entries whose first matching filter wins.
ParamValue = Any
Params = Mapping[str, ParamValue]

DEFAULT_MERGE_NAME = "merged"


@dataclass(frozen=True)
class ModelRef:
    """A reference to a model as written in a recipe.

    `name` is a hub id (`org/name`), a local path, or a step name; `revision` comes from
    `org/name@rev`; `lora` from mergekit's `model+lora` syntax (an adapter applied on the fly).
    """

    name: str
    revision: str | None = None
    lora: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        base, plus, lora = text.partition("+")
        name, at, revision = base.partition("@")
        return cls(name=name, revision=revision if at else None, lora=lora if plus else None)

    def __str__(self) -> str:
        text = self.name
        if self.revision:
            text += f"@{self.revision}"
        if self.lora:
            text += f"+{self.lora}"
        return text


@dataclass(frozen=True)
class InputModel:
    """An entry of `models:` or of `slices[].sources`: a model with its parameters."""

    model: ModelRef
    parameters: Params = field(default_factory=dict)
    layer_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class Slice:
    """One `slices:` entry: a run of output layers built from `sources` (mergekit semantics)."""

    sources: tuple[InputModel, ...]
    parameters: Params = field(default_factory=dict)
    base_model: ModelRef | None = None
    residual_weight: float | None = None


@dataclass(frozen=True)
class MergeStep:
    """One merge stage: exactly the mergekit config keys, plus a name usable as a reference."""

    name: str
    merge_method: str
    models: tuple[InputModel, ...] = ()
    slices: tuple[Slice, ...] = ()
    base_model: ModelRef | None = None
    parameters: Params = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None  # "base" | "union" | a model reference
    tokenizer: Mapping[str, Any] | None = None  # {source, tokens, pad_to_multiple_of}
    chat_template: str | None = None  # built-in name, "auto", or a Jinja string
    modules: Mapping[str, Any] | None = None
    # `modules: {default: {models|slices, parameters}}` becomes `models`/`slices` above; its
    # parameters are a precedence level between the slices' and the top level's (mergekit).
    module_parameters: Params = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)  # the stage's raw mergekit config
    search: MergeSearch | None = None  # lossless's `search:` key: try many configs, keep the best

    kind = "merge"


@dataclass(frozen=True)
class SearchDimension:
    """One `search.vary` entry: a config value to vary, over `choices` or a range [low, high].

    `keys` is the YAML path of the value inside the stage config, parsed from the key as written
    (`models[0].parameters.weight` → ("models", 0, "parameters", "weight")). A range with `step`
    is a lattice (a grid walks it; random and optuna samples snap to it); `log` samples log-evenly.
    """

    name: str
    keys: tuple[str | int, ...]
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False


@dataclass(frozen=True)
class SearchObjective:
    dataset: str
    metric: str | None = None  # None: the dataset's default metric (exact_match or loss)
    goal: str | None = None  # "maximize" | "minimize"; None: from the metric (loss → minimize)


@dataclass(frozen=True)
class MergeSearch:
    """`search:` on a merge stage: vary config values, measure each trial, keep the best one.

    `measure` is the named eval step as the search reads it: its data, reference and settings,
    with its `models` and `gate` dropped (each trial's merge is what is measured). `constraints`
    are gates (evaluation/gates.py vocabulary); absent in the recipe, they are the eval's `gate`.
    """

    vary: tuple[SearchDimension, ...]
    eval: str
    measure: EvalStep
    objective: SearchObjective
    constraints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    trials: int | None = None  # None: the whole grid
    sampler: str = "grid"  # "grid" | "random" | "optuna"
    seed: int = 0


@dataclass(frozen=True)
class TrainStep:
    """Train a LoRA / QLoRA / full fine-tune / PEFT adapter on `base` (see steps/train.py)."""

    name: str
    base: ModelRef | None  # None when the model starts from `settings.init`
    settings: TrainSettings = field(default_factory=TrainSettings)
    # The block as written: the step's fingerprint digests it (engine/freshness.py), so making a
    # default explicit in TrainSettings, or adding a field, does not rerun finished steps.
    block: Mapping[str, Any] = field(default_factory=dict)

    kind = "train"

    @property
    def method(self) -> str:
        return self.settings.method

    @property
    def init(self) -> InitSettings | None:
        return self.settings.init


@dataclass(frozen=True)
class AdapterUse:
    adapter: ModelRef
    weight: float = 1.0


@dataclass(frozen=True)
class ApplyStep:
    """Apply one or more adapters onto `to` (lazily, inside a merge, unless `save` is set)."""

    name: str
    to: ModelRef
    adapters: tuple[AdapterUse, ...]
    save: bool = False

    kind = "apply"


@dataclass(frozen=True)
class EvalStep:
    """Measure each model on each held-out dataset; gates fail the run when breached."""

    name: str
    models: tuple[ModelRef, ...]
    data: Mapping[str, Any]  # dataset name → path or {path, format, ...}
    reference: ModelRef | None = None
    gate: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    kind = "eval"


@dataclass(frozen=True)
class LengthFilter:
    """Rows kept by `generate:` have `min_chars <= len(text.strip()) <= max_chars` (None: no cap)."""

    min_chars: int = 1
    max_chars: int | None = None

    def keeps(self, text: str) -> bool:
        n = len(text.strip())
        return n >= self.min_chars and (self.max_chars is None or n <= self.max_chars)


@dataclass(frozen=True)
class Sampling:
    """Temperature / nucleus sampling of up to `max_new_tokens` tokens (Magpie user turns, text)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64


@dataclass(frozen=True)
class GenerateStep:
    """Sample rehearsal data from `model` (see steps/generate.py): chat rows answered greedily,
    to prompts from `prompts` or to user turns the model writes itself (Magpie), plus optional
    raw-text rows sampled from BOS. Its output is data (`data.jsonl`), not a model."""

    name: str
    model: ModelRef
    prompts: str | None = None  # a prompts file; None: Magpie
    samples: int | None = None  # chat rows to keep; None: one per prompt
    chat_template: str | None = None  # built-in name or Jinja; None: the model's own
    max_new_tokens: int = 128  # per answer
    batch_size: int = 16
    seed: int | None = None  # None: the run's --seed, else 0
    length: LengthFilter = field(default_factory=LengthFilter)
    magpie: Sampling = field(default_factory=Sampling)
    text_samples: int = 0  # raw-text rows to keep (`text.samples`)
    text: Sampling = field(default_factory=Sampling)

    kind = "generate"


Step = GenerateStep | TrainStep | ApplyStep | MergeStep | EvalStep


@dataclass(frozen=True)
class PushTarget:
    """`push_to_hub:` of a train, apply or merge step: the hub repo its output is uploaded to
    after a run whose gates passed (hub/run_push.py). Kept beside the steps, not in them, so
    that no fingerprint digests it: pushing elsewhere never reruns a step."""

    repo: str
    private: bool = False
    revision: str | None = None


@dataclass(frozen=True)
class Recipe:
    path: str  # the file it was read from
    steps: tuple[Step, ...]
    output: str | None = None
    documents: tuple[Mapping[str, Any], ...] = ()  # the YAML documents as data, for model cards
    # The recipe's text when it is not the file's: `--set` overrides, written out (commands/run.py).
    text: str | None = None
    pushes: Mapping[str, PushTarget] = field(default_factory=dict)  # step name → `push_to_hub:`

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def step_names(self) -> set[str]:
        return {step.name for step in self.steps}

    @cached_property
    def inputs(self) -> tuple[Input, ...]:
        """Every input of every step (`recipe/inputs.py`), in document order."""
        from lossless.recipe.inputs import walk_inputs

        return tuple(walk_inputs(self.documents))

    def where(self, path: tuple[str | int, ...]) -> str:
        """`recipe.yaml:12:11 (train.skill.data[1].path)`: where an input is written, for a run's
        messages; `path` is an `Input.path` (document index, *keys)."""
        from pathlib import Path

        from lossless.errors import format_yaml_path
        from lossless.recipe.yaml_io import parse_documents

        line = col = 0
        try:
            text = self.text if self.text is not None else Path(self.path).read_text("utf-8")
            documents, _ = parse_documents(text, self.path)
            if path and isinstance(path[0], int) and path[0] < len(documents):
                line, col = documents[path[0]][1].value_at(path[1:])
        except (OSError, UnicodeDecodeError):
            pass  # the file moved since it was read: the YAML path alone still says where
        place = f"{self.path}:{line}:{col}" if line else self.path
        return f"{place} ({format_yaml_path(path[1:])})"

    def inputs_of(self, step: str, kind: str | None = None) -> list[Input]:
        return [i for i in self.inputs if i.owner == step and kind in (None, i.kind)]

    def model_refs(self, step: str) -> list[ModelRef]:
        """Every model a step reads, each once; a `model+lora` also yields the adapter alone."""
        unique: dict[str, ModelRef] = {}
        for item in self.inputs_of(step, "model"):
            ref = item.ref
            unique.setdefault(str(ref), ref)
            if ref.lora:
                unique.setdefault(ref.lora, ModelRef.parse(ref.lora))
        return list(unique.values())

    @property
    def merges(self) -> tuple[MergeStep, ...]:
        return tuple(s for s in self.steps if isinstance(s, MergeStep))

    @property
    def is_plain_mergekit(self) -> bool:
        """True for a bare mergekit config (one merge, no generate/train/apply/eval)."""
        return len(self.steps) == 1 and isinstance(self.steps[0], MergeStep)
