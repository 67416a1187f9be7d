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


def test_each_local_format_gives_its_rows_as_examples(tmp_path: Path, tok) -> None:
    """json / parquet / csv / jsonl files, as a train step reads them, through to examples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lossless.training.datasets import load_source
    from lossless.training.settings import DataSource

    rows = [{"instruction": "Add 1 2", "output": "3"}, {"instruction": "Add 2 2", "output": "4"}]
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))  # an exporter's wrapper
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text('instruction,output\n"Add 1 2",3\n"Add 2 2",4\n')
    write_jsonl(tmp_path / "d.jsonl", rows)
    for name in ("d.json", "d.parquet", "d.csv", "d.jsonl"):
        got, label = load_source(DataSource(name), tmp_path)
        assert got == rows and label == str(tmp_path / name)
        examples = to_examples(got, detect_format(got, label), tok, None, source=label)
        assert [(e.prompt, e.answer) for e in examples] == [
            ("### Instruction:\nAdd 1 2\n\n### Response:\n", "3"),
            ("### Instruction:\nAdd 2 2\n\n### Response:\n", "4"),
        ]


def test_bad_rows_of_json_csv_and_parquet_name_the_file_and_row(tmp_path: Path, tok) -> None:
    (tmp_path / "list.json").write_text('[{"text": "a"}, "b"]')
    with pytest.raises(LosslessError, match=r"list\.json: row 2: expected a JSON object, got str"):
        load_rows(tmp_path / "list.json")
    (tmp_path / "object.json").write_text('{"text": "a"}')
    with pytest.raises(
        LosslessError, match=r"object\.json: expected a JSON list of objects, got dict"
    ):
        load_rows(tmp_path / "object.json")
    (tmp_path / "broken.json").write_text('[{"text": "a"},\n {"text": }]')
    with pytest.raises(LosslessError, match=r"broken\.json: invalid JSON at line 2"):
        load_rows(tmp_path / "broken.json")

    (tmp_path / "wide.csv").write_text("prompt,completion\na,b\nc,d,e\n")
    with pytest.raises(LosslessError) as wide:
        load_rows(tmp_path / "wide.csv")
    assert "wide.csv: row 2 (line 3): 3 fields, the header names 2" in wide.value.message
    assert "quote" in (wide.value.hint or "")
    (tmp_path / "short.csv").write_text("prompt,completion\na,b\nc\n")
    short = load_rows(tmp_path / "short.csv")
    assert short == [{"prompt": "a", "completion": "b"}, {"prompt": "c"}]
    with pytest.raises(LosslessError, match=r"short\.csv: row 2: missing field 'completion'"):
        to_examples(short, "completion", tok, None, source=str(tmp_path / "short.csv"))

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": None}]), tmp_path / "n.parquet")
    nulls = load_rows(tmp_path / "n.parquet")
    with pytest.raises(LosslessError, match=r"n\.parquet: row 2: missing field 'text'"):
        to_examples(nulls, "text", tok, None, source=str(tmp_path / "n.parquet"))
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(LosslessError, match=r"fake\.parquet: not a readable parquet file"):
        load_rows(tmp_path / "fake.parquet")
