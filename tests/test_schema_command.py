"""`lossless schema`: the schema file, byte for byte, on stdout or into --output; no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from lossless.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema" / "recipe.schema.json"


def test_prints_the_schema_file_as_valid_draft_07_without_torch() -> None:
    code = (
        "import sys; from lossless.cli import main; rc = main(['schema']); "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules]; "
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True)
    assert done.stdout == SCHEMA.read_bytes()
    assert b"HEAVY []" in done.stderr
    printed = json.loads(done.stdout)
    Draft7Validator.check_schema(printed)
    assert printed["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_output_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "recipe.schema.json"
    assert main(["schema", "--output", str(target)]) == 0
    assert target.read_bytes() == SCHEMA.read_bytes()
    assert capsys.readouterr().out == ""  # nothing on stdout: the schema went to the file
    assert main(["schema", "-o", str(target)]) == 0  # the same schema again: fine
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.schema.json"]  # no partial left


def test_output_never_overwrites_another_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": true}\n')
    assert main(["schema", "--output", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not this schema; not overwritten" in err
    assert mine.read_text() == '{"mine": true}\n'
    assert main(["schema", "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
