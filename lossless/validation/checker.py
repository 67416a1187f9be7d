"""Where semantic checks put their problems: file, lines, positions and the documents checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.errors import Problem, YamlPath
from lossless.recipe.yaml_io import Positions, source_line

# Top-level mergekit keys that people paste inside `parameters:`, where mergekit ignores them.
MISPLACED = {
    "tokenizer_source",
    "tokenizer",
    "dtype",
    "out_dtype",
    "base_model",
    "merge_method",
    "chat_template",
    "models",
    "slices",
    "layer_range",
    "name",
}


@dataclass
class Checker:
    file: str
    lines: list[str]
    positions: list[Positions]
    recipe_dir: Path | None
    problems: list[Problem] = field(default_factory=list)
    step_names: set[str] = field(default_factory=set)
    data_steps: set[str] = field(default_factory=set)  # `generate:` steps: they make data
    docs: list[Any] = field(default_factory=list)
    allow_crimes: bool = False  # --allow-crimes: models of different architectures may merge

    def get(self, doc: int, path: YamlPath) -> Any:
        node: Any = self.docs[doc]
        for part in path:
            node = node[part]
        return node

    def add(
        self, doc: int, path: YamlPath, message: str, *, at_key: bool = False, **kw: Any
    ) -> None:
        pos = self.positions[doc]
        line, col = pos.key_at(path) if at_key else pos.value_at(path)
        self.problems.append(
            Problem(
                message,
                file=self.file,
                path=path,
                line=line,
                col=col,
                source_line=source_line(self.lines, line),
                **kw,
            )
        )
