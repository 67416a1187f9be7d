"""A train step's `fsdp:`, `fsdp_config:` and `deepspeed:` keys → transformers' TrainingArguments.

Spelled as axolotl and LLaMA-Factory spell them:

    fsdp: [full_shard, auto_wrap]                     # or `fsdp: true`, or "full_shard offload"
    fsdp_config: {transformer_layer_cls_to_wrap: LlamaDecoderLayer, state_dict_type: FULL_STATE_DICT}
    deepspeed: examples/deepspeed/ds_z3_config.json   # a file beside the recipe (an input)

transformers 5 takes `fsdp=True` and everything else in `fsdp_config`; its old option list
(`full_shard auto_wrap`) still parses but warns that it is going away, so the options are
translated here into the `fsdp_config` entries transformers' own translation makes
(`TrainingArguments._apply_legacy_fsdp_to_config`): written by hand because that function is
private and deprecated. transformers ignores an `fsdp_config` key it does not know; the table
below (the keys its `_process_fsdp_args` reads) lets validation refuse a misspelt one with its
line. Torch-free: `lossless validate` reads it. Last, what each rank of a launched step checks
(accelerate set up what the step asked for) and how it saves a sharded model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

FSDP_OPTIONS = (
    "full_shard",
    "shard_grad_op",
    "no_shard",
    "hybrid_shard",
    "hybrid_shard_zero2",
    "offload",
    "auto_wrap",
)
_STRATEGIES = ("full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "hybrid_shard_zero2")
_FSDP2_RESHARD = {"full_shard": True, "shard_grad_op": False}  # FSDP2 knows only these two

# fsdp_config keys transformers 5.24 reads → the values each takes (a type, or the choices).
FSDP_CONFIG_KEYS: dict[str, Any] = {
    "version": (1, 2),
    "reshard_after_forward": (bool, str),
    "cpu_offload": bool,
    "activation_checkpointing": bool,
    "cpu_ram_efficient_loading": bool,
    "state_dict_type": ("FULL_STATE_DICT", "SHARDED_STATE_DICT"),
    "auto_wrap_policy": ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"),
    "transformer_layer_cls_to_wrap": (str, list),
    "min_num_params": int,
    "forward_prefetch": bool,  # FSDP1 only, as are the four below
    "backward_prefetch": ("BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"),
    "use_orig_params": bool,
    "sync_module_states": bool,
    "limit_all_gathers": bool,
}
ALIASES = {"offload_params": "cpu_offload"}  # axolotl's name for it


def config_key(key: str) -> str:
    """`fsdp_offload_params` → `cpu_offload`: axolotl's (and accelerate's) `fsdp_` prefix, which
    transformers strips too, and axolotl's names."""
    key = key.removeprefix("fsdp_")
    return ALIASES.get(key, key)


def _accepts(expected: Any, value: Any) -> bool:
    if isinstance(expected, type):
        return isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if all(isinstance(e, type) for e in expected):
        return any(_accepts(e, value) for e in expected)
    return value in expected and not isinstance(value, bool)


def fsdp_options(value: Any) -> tuple[str, ...] | None:
    """`fsdp:` as written → its options; `true` is FSDP with transformers' defaults (full
    sharding, the model's own layer class wrapped); `false` or absent is no FSDP."""
    if value is None or value is False:
        return None
    if value is True:
        return ()
    return tuple(value.split()) if isinstance(value, str) else tuple(value)


# (where under the step, message, hint, whether it is the key itself that is wrong)
Problem = tuple[tuple[str, ...], str, str | None, bool]


def fsdp_problems(options: tuple[str, ...] | None, config: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a step's FSDP keys; `where` is () for `fsdp` itself."""
    from lossless.recipe.references import did_you_mean

    found: list[Problem] = []
    for key, value in config.items():
        name = config_key(str(key))
        where = ("fsdp_config", str(key))
        if name not in FSDP_CONFIG_KEYS:
            prefix = "fsdp_" if str(key).startswith("fsdp_") else ""
            names = [prefix + k for k in (*FSDP_CONFIG_KEYS, *ALIASES)]
            hint = did_you_mean(str(key), names) or f"keys: {', '.join(FSDP_CONFIG_KEYS)}"
            found.append(
                (where, f"`{key}` is not an fsdp_config key transformers reads", hint, True)
            )
        elif not _accepts(FSDP_CONFIG_KEYS[name], value):
            expected = FSDP_CONFIG_KEYS[name]
            said = (
                " or ".join(t.__name__ for t in expected)
                if isinstance(expected, tuple) and all(isinstance(e, type) for e in expected)
                else expected.__name__
                if isinstance(expected, type)
                else "one of " + ", ".join(map(str, expected))
            )
            found.append((where, f"fsdp_config `{key}` is {value!r}; expected {said}", None, False))
    if options is None:
        if config:
            found.append(
                (("fsdp_config",), "`fsdp_config` has no effect without `fsdp`", None, True)
            )
        return found
    strategies = [o for o in options if o in _STRATEGIES]
    if len(strategies) > 1:
        found.append(
            ((), f"`fsdp` names two sharding strategies: {', '.join(strategies)}", None, False)
        )
    version = _version(config)
    for strategy in strategies[:1]:
        if version == 2 and strategy not in _FSDP2_RESHARD:
            found.append(
                (
                    (),
                    f"`{strategy}` is a strategy of FSDP1; transformers uses FSDP2 unless told",
                    "use full_shard or shard_grad_op, or set `fsdp_config: {version: 1}`",
                    False,
                )
            )
    return found


def _version(config: Mapping[str, Any]) -> int:
    for key, value in config.items():
        if config_key(str(key)) == "version" and value in (1, 2):
            return int(value)
    return 2


def fsdp_arguments(options: tuple[str, ...] | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """TrainingArguments' `fsdp` and `fsdp_config` for a step's keys ({} without `fsdp`).
    Entries written in `fsdp_config` win over what the options imply."""
    if options is None:
        return {}
    merged = {config_key(str(k)): v for k, v in config.items()}
    version = _version(merged)
    for option in options:
        if option in _STRATEGIES:
            reshard: Any = _FSDP2_RESHARD[option] if version == 2 else option
            merged.setdefault("reshard_after_forward", reshard)
        elif option == "offload":
            merged.setdefault("cpu_offload", True)
        # auto_wrap: transformers' default policy wraps the model's own layer class already
    return {"fsdp": True, "fsdp_config": merged}


def uses_sharding(fsdp: tuple[str, ...] | None, deepspeed: str | None) -> str | None:
    """The recipe key that asks for several processes (`fsdp` / `deepspeed`), if any."""
    if fsdp is not None:
        return "fsdp"
    return "deepspeed" if deepspeed is not None else None


def distributed_arguments(s: Any, recipe_dir: Path) -> dict[str, Any]:
    """SFTConfig's `fsdp` / `fsdp_config` / `deepspeed` for a step's TrainSettings `s`."""
    found = fsdp_arguments(s.fsdp, dict(s.fsdp_config))
    if s.method in ("lora", "qlora", "dora") and "ddp_find_unused_parameters" not in dict(
        s.trainer
    ):
        # Every LoRA weight takes part in every forward pass, so DDP need not search for unused
        # ones after each backward (transformers' default; slower, and a warning per rank).
        # LLaMA-Factory sets the same for LoRA.
        found["ddp_find_unused_parameters"] = False
    if s.deepspeed is not None:
        from lossless.recipe.references import local_path

        config = local_path(s.deepspeed, recipe_dir)
        if config is None:  # validation says so with its line; a run started anyway says it here
            raise LosslessError(f"train: the DeepSpeed config {s.deepspeed} does not exist")
        found["deepspeed"] = str(config)
    return found


def check_processes(trainer: Any, step: Any, processes: int | None) -> None:
    """What the step asked for is what accelerate set up: as many ranks as `--num-processes`
    said, and FSDP or DeepSpeed when the recipe names them. accelerate falls back silently
    (one process for `--num_processes 2` on a single GPU; DDP for FSDP on CPUs, where its
    FSDP plugin is ignored), and a run that trains differently from its recipe must not pass."""
    args, s = trainer.args, step.settings
    if processes is not None and args.world_size != processes:
        raise LosslessError(
            f"train.{step.name}: --num-processes {processes} was asked for, and the launcher started "
            f"{args.world_size}",
            hint="accelerate starts several processes on several GPUs (or with --config-file)",
        )
    distributed = str(trainer.accelerator.distributed_type).removeprefix("DistributedType.")
    if s.fsdp is not None and not trainer.is_fsdp_enabled:
        raise LosslessError(
            f"train.{step.name}.fsdp: transformers got fsdp_config {dict(args.fsdp_config)}, "
            f"but accelerate runs these {args.world_size} processes as {distributed}, not FSDP",
            hint="FSDP shards over GPUs; on CPUs, drop `fsdp:` (the processes then use DDP)",
        )
    if s.deepspeed is not None and not trainer.is_deepspeed_enabled:
        raise LosslessError(
            f"train.{step.name}.deepspeed: transformers got the config, but accelerate runs {distributed}",
            hint="DeepSpeed needs GPUs and `--launcher accelerate`",
        )


def save_sharded(trainer: Any, out_dir: Path) -> None:
    """The final weights of an FSDP or DeepSpeed run, gathered by transformers' save_model (a
    collective: every rank calls it); it writes on rank 0 only. A sharded FSDP state dict is
    switched to a full one first, so the output is one loadable model. transformers adds
    `training_args.bin` (a pickle), which an output of lossless does not carry."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        (out_dir / "training_args.bin").unlink(missing_ok=True)
