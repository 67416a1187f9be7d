"""lossless.data: every file type, format detection, chat rendering, labels, clear row errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.training.datasets import Example, detect_format, encode, load_rows, to_examples
from tests.factories import make_tokenizer, write_jsonl


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        make_tokenizer(tmp_path_factory.mktemp("tok"), chatml=True)
    )


def test_file_types(tmp_path: Path) -> None:
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("prompt,completion\na,b\nc,d\n")
    (tmp_path / "d.txt").write_text("one\n\ntwo\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for ext in ("jsonl", "json", "csv", "parquet"):
        assert load_rows(tmp_path / f"d.{ext}") == rows
    assert load_rows(tmp_path / "d.txt") == [{"text": "one"}, {"text": "two"}]


def test_detect_format() -> None:
    assert detect_format([{"messages": []}], "x") == "chat"
    assert detect_format([{"instruction": "i", "output": "o"}], "x") == "instruction"
    assert detect_format([{"prompt": "p", "completion": "c"}], "x") == "completion"
    assert detect_format([{"text": "t"}], "x") == "text"
    with pytest.raises(LosslessError, match="cannot tell the format"):
        detect_format([{"foo": 1}], "x")


def test_chat_example_and_labels(tok) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    ]
    (ex,) = to_examples(rows, "chat", tok, "chatml")
    assert ex == Example("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "hello", "chat")
    ids, labels = encode(tok, ex, 64)
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == "hello"
    ids_all, labels_all = encode(tok, ex, 5, loss_on="all")
    assert len(ids_all) == 5 and labels_all == ids_all


def test_instruction_prompt(tok) -> None:
    (ex,) = to_examples(
        [{"instruction": "Add", "input": "1 2", "output": "3"}], "instruction", tok, None
    )
    assert (
        ex.prompt == "### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n"
        and ex.answer == "3"
    )


def test_malformed_rows_name_file_row_field(tmp_path: Path, tok) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "c"}]
    )
    with pytest.raises(LosslessError, match=r"bad.jsonl: row 2: missing field 'completion'"):
        to_examples(load_rows(path), "completion", tok, None, source=str(path))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(LosslessError, match=r"broken.jsonl: row 2: invalid JSON"):
        load_rows(tmp_path / "broken.jsonl")
    with pytest.raises(LosslessError, match="not found"):
        load_rows(tmp_path / "missing.jsonl")
    with pytest.raises(LosslessError, match="row 1: field 'messages' has no assistant turn"):
        to_examples([{"messages": [{"role": "user", "content": "x"}]}], "chat", tok, None)


def test_encoding_error_names_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(
        LosslessError, match=r"d\.jsonl: row 2: byte 0xe9 at column 14 is not UTF-8"
    ):
        load_rows(path)
    (tmp_path / "d.txt").write_bytes(b"fine\n\xff\n")
    with pytest.raises(LosslessError, match=r"row 2: byte 0xff at column 1"):
        load_rows(tmp_path / "d.txt")


def test_examples_whose_answer_is_cut_away_are_counted(tmp_path: Path, tok, capsys) -> None:
    from lossless.training.examples import tokenize
    from lossless.training.settings import DataSource, TrainSettings

    long = {"prompt": "word " * 100, "completion": " yes"}
    short = {"prompt": "hi", "completion": " yes"}
    write_jsonl(tmp_path / "all-long.jsonl", [long] * 3)
    settings = TrainSettings(data=(DataSource("all-long.jsonl"),), max_seq_length=16)
    with pytest.raises(LosslessError) as info:
        tokenize(settings.data, settings, tok, tmp_path)
    assert "3 of 3 example(s) lose their whole answer to max_seq_length 16" in str(info.value)
    assert "none is left to learn from" in str(info.value) and "raise `max_seq_length`" in str(
        info.value
    )
    write_jsonl(tmp_path / "mixed.jsonl", [long, short, short])
    settings = TrainSettings(data=(DataSource("mixed.jsonl"),), max_seq_length=16)
    features = tokenize(settings.data, settings, tok, tmp_path)
    assert len(features) == 2
    assert "1 of 3 example(s) lose their whole answer" in capsys.readouterr().err
    write_jsonl(tmp_path / "most-long.jsonl", [long, long, short])
    settings = TrainSettings(data=(DataSource("most-long.jsonl"),), max_seq_length=16)
    with pytest.raises(LosslessError, match="only 1 are left"):
        tokenize(settings.data, settings, tok, tmp_path)
