"""A stand-in `lm_eval` package for the plumbing tests: it records every call lossless makes and
answers with lm-eval's real output recorded in tests/lm_eval/recorded_output.json.

    fake = install(monkeypatch, {"/path/to/base": "base", "/path/to/merged": "merged"})
    ... run_eval(...) ...
    fake.calls     # [{"model": "base", "tasks": [...], "num_fewshot": 1, "cwd": ..., ...}, ...]
"""

from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORDED = json.loads((Path(__file__).parent / "lm_eval" / "recorded_output.json").read_text())
# The task index of tests/lm_eval/tasks, as lm-eval builds it: names → kind (and a group's tasks).
INDEX = {
    "tiny_qa": ("TASK", None),
    "tiny_echo": ("TASK", None),
    "tiny_text": ("TASK", None),
    "tiny_suite": ("GROUP", ["tiny_qa", "tiny_echo"]),
}


@dataclass
class FakeLmEval:
    models: dict[str, str]  # model dir → the recorded output's key ("base", "merged")
    calls: list[dict[str, Any]] = field(default_factory=list)
    managers: list[dict[str, Any]] = field(default_factory=list)
    wrapped: list[dict[str, Any]] = field(default_factory=list)

    def module(self) -> dict[str, types.ModuleType]:
        root = types.ModuleType("lm_eval")
        tasks = types.ModuleType("lm_eval.tasks")
        models = types.ModuleType("lm_eval.models")
        huggingface = types.ModuleType("lm_eval.models.huggingface")
        fake = self

        class Entry:
            def __init__(self, kind: str, members: list[str] | None) -> None:
                self.kind = types.SimpleNamespace(name=kind)
                self.cfg = {"task": members} if members else {}

        class TaskManager:
            def __init__(self, include_path=None, include_defaults=True, **_: Any) -> None:
                fake.managers.append({"include_path": include_path, "defaults": include_defaults})
                self.task_index = {n: Entry(*v) for n, v in INDEX.items()}
                if include_defaults:
                    self.task_index["arc_easy"] = Entry("TASK", None)
                self.all_tasks = sorted(self.task_index)

        class HFLM:
            def __init__(self, pretrained: Any, tokenizer: Any, batch_size: int) -> None:
                self.model, self.tokenizer = pretrained, tokenizer
                fake.wrapped.append(
                    {"batch_size": batch_size, "chat_template": tokenizer.chat_template}
                )

        def simple_evaluate(model: HFLM, task_manager: TaskManager, **kwargs: Any) -> dict:
            name = fake.models[str(model.model.config._name_or_path)]
            fake.calls.append({"model": name, "cwd": os.getcwd(), **kwargs})
            recorded = RECORDED[name]
            wanted = set(kwargs["tasks"])
            for group in kwargs["tasks"]:
                wanted |= set(recorded["group_subtasks"].get(group, []))
            return {
                key: {k: v for k, v in value.items() if k in wanted}
                if isinstance(value, dict) and key not in ("config",)
                else value
                for key, value in recorded.items()
            }

        root.simple_evaluate = simple_evaluate  # type: ignore[attr-defined]
        tasks.TaskManager = TaskManager  # type: ignore[attr-defined]
        huggingface.HFLM = HFLM  # type: ignore[attr-defined]
        root.tasks, root.models, models.huggingface = tasks, models, huggingface  # type: ignore[attr-defined]
        return {
            "lm_eval": root,
            "lm_eval.tasks": tasks,
            "lm_eval.models": models,
            "lm_eval.models.huggingface": huggingface,
        }


def install(monkeypatch: Any, models: dict[str, str]) -> FakeLmEval:
    fake = FakeLmEval({str(k): v for k, v in models.items()})
    for name, module in fake.module().items():
        monkeypatch.setitem(sys.modules, name, module)
    return fake
