"""No traceback on any path: OS errors name the path and what to do; data files that are not
UTF-8 name the file, line and offset; a full disk says how much room is needed where."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from lossless.cli import main
from lossless.engine.io_errors import check_text_files, from_os_error
from lossless.errors import LosslessError
from tests.factories import make_model


def said(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_os_errors_name_the_path_and_what_to_do(tmp_path: Path) -> None:
    full = from_os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")))
    assert f"no space left on the disk holding {tmp_path / 'x'}" in full.message
    assert "is free" in full.message and "rerun" in (full.hint or "")
    long = from_os_error(OSError(errno.ENAMETOOLONG, "File name too long", "a" * 5000))
    assert "File name too long" in long.message and "5,000 characters" in long.message
    assert "shorter name" in (long.hint or "")
    denied = from_os_error(PermissionError(errno.EACCES, "Permission denied", "/root/x"))
    assert denied.message == "Permission denied: /root/x" and "permissions" in (denied.hint or "")


def test_the_part_of_a_path_that_blocks_it_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file\n")
    under_a_file = str(tmp_path / "data" / "train.jsonl")
    blocked = from_os_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", under_a_file))
    assert blocked.message == (
        f"Not a directory: {under_a_file} ({tmp_path / 'data'} is a file, not a directory)"
    )
    missing = str(tmp_path / "gone" / "deeper" / "train.jsonl")
    absent = from_os_error(FileNotFoundError(errno.ENOENT, "No such file or directory", missing))
    assert (
        absent.message
        == f"No such file or directory: {missing} ({tmp_path / 'gone'} does not exist)"
    )
    alone = str(tmp_path / "train.jsonl")
    just_it = from_os_error(FileNotFoundError(errno.ENOENT, "No such file or directory", alone))
    assert just_it.message == f"No such file or directory: {alone}"  # its folder exists


def test_binary_bytes_in_a_data_file_name_file_line_and_offset(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(LosslessError) as info:
        check_text_files([data])
    assert str(info.value).startswith(f"{data}:2: not UTF-8 text (byte 0xff at offset 25)")
    check_text_files([tmp_path / "missing.jsonl", tmp_path])  # not files: nothing to check


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nt-models")
    make_model(root / "a", seed=1)
    make_model(root / "b", seed=2)
    return root


def test_disk_full_mid_write_says_where_and_how_much(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from lossless.tensors import output_shards

    def full(fd: int, data: memoryview, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as os.pwrite raises it: no path

    monkeypatch.setattr(output_shards, "_pwrite", full)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"models:\n  - model: {models / 'a'}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {models / 'b'}\n    parameters: {{weight: 0.5}}\nmerge_method: linear\n"
    )
    assert main(["run", str(recipe), str(tmp_path / "out"), "--quiet"]) == 1
    err = said(capsys)
    assert "no space left on the disk holding" in err and ".out.partial-" in err
    assert "step `merged` could not finish writing; it needs about" in err and "is free" in err
    assert "internal error" not in err


def test_binary_data_file_in_a_run_is_named(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"train:\n  t:\n    base: {models / 'a'}\n    method: lora\n    data: data.jsonl\n"
        "    max_steps: 1\n"
    )
    assert main(["run", str(recipe), "--quiet"]) == 1
    err = said(capsys)
    assert f"{tmp_path / 'data.jsonl'}:1: not UTF-8 text (byte 0x89 at offset 0)" in err
    assert "internal error" not in err
