"""An adapter against its target, before any work: LoRA ranks, tensor shapes, module names.

For `model+lora` and `apply:` steps (called from `inputs_check.py`): the adapter's A and B agree
on their rank, every tensor it changes exists in the target with the shape it needs, and its
`target_modules` name modules the target has (a warning with a did-you-mean when one matches
nothing). Reads adapter_config.json and safetensors headers only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from lossless.errors import YamlPath
from lossless.recipe.references import did_you_mean
from lossless.validation.checker import Checker

if TYPE_CHECKING:
    from lossless.validation.inputs_check import Facts


def check_adapter(
    c: Checker,
    d: int,
    path: YamlPath,
    adapter: str,
    target: str,
    find: Callable[[str], Facts | None],
) -> None:
    from lossless.tensors.adapters import CONFIG, group_adapter_keys

    facts = find(adapter)
    if facts is None:
        return
    config_file = facts.directory / CONFIG
    if not config_file.is_file():
        c.add(
            d,
            path,
            f"`{adapter}` is not a PEFT adapter: {CONFIG} is missing",
            code="not-an-adapter",
            hint="an adapter directory holds adapter_config.json and adapter_model.safetensors",
        )
        return
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        c.add(
            d, path, f"`{adapter}`: {config_file} is not valid JSON ({error})", code="bad-adapter"
        )
        return
    if facts.defect:
        c.add(d, path, f"adapter `{adapter}`: {facts.defect}", code="bad-adapter")
        return
    parts, replaced = group_adapter_keys(facts.shapes)
    wants: dict[str, tuple[int, ...]] = dict(replaced)
    for module, found in parts.items():
        embedding = "emb_A" in found
        a, b = (
            (found.get("emb_A"), found.get("emb_B"))
            if embedding
            else (found.get("A"), found.get("B"))
        )
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            continue  # load_adapter names the missing factor when the step runs
        if a[0] != b[1]:
            c.add(
                d,
                path,
                f"adapter `{adapter}`: module `{module}` has A of rank {a[0]} ({list(a)}) but B "
                f"of rank {b[1]} ({list(b)})",
                code="adapter-rank",
                hint="A is [r, in] and B is [out, r] with one r; the adapter file is damaged or "
                "its factors come from different adapters",
            )
            continue
        rows, cols = (a[1], b[0]) if embedding else (b[0], a[1])
        flip = bool(config.get("fan_in_fan_out")) and not embedding
        wants[f"{module}.weight"] = (cols, rows) if flip else (rows, cols)
    target_facts = find(target)
    if target_facts is None or not target_facts.shapes:
        return  # a step's output, or not local: checked when the step starts
    have = target_facts.shapes
    misfits = [
        f"`{n}` is not in the model"
        if n not in have
        else f"`{n}`: adapter expects shape {list(w)}, model has {list(have[n])}"
        for n, w in sorted(wants.items())
        if n not in have or tuple(have[n]) != tuple(w)
    ]
    if misfits:
        shown = "; ".join(misfits[:3]) + (
            f"; ... {len(misfits) - 3} more" if len(misfits) > 3 else ""
        )
        c.add(
            d,
            path,
            f"adapter `{adapter}` does not fit `{target}`: {shown}",
            code="adapter-misfit",
            hint="apply an adapter to a model of the architecture and sizes it was trained on "
            f"(adapter_config.json names {config.get('base_model_name_or_path')!r})",
        )
    # peft's rule for a list: a module matches when its name is the entry or ends in `.entry`
    modules = {n.rsplit(".", 1)[0] for n in have}
    targets = config.get("target_modules")
    if isinstance(targets, list):
        unmatched = [
            t
            for t in targets
            if isinstance(t, str) and not any(m == t or m.endswith("." + t) for m in modules)
        ]
        for name in unmatched:
            c.add(
                d,
                path,
                f"adapter `{adapter}`: target_modules `{name}` matches no module of `{target}`",
                severity="warning",
                code="adapter-unmatched",
                hint=did_you_mean(name, sorted({m.rsplit(".", 1)[-1] for m in modules}))
                or "the adapter holds no weights for it; check adapter_config.json",
            )
