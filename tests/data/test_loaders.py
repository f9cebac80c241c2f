"""Dataset loaders: the shipped benchmarks load whole and valid, bad rows become LoadErrors, the rest load."""

import csv
import gzip
import json
import time
from collections import Counter

import pandas as pd
import pytest

from crucible.data.loaders import (
    BUILTIN_DATASETS,
    EXAMPLE_COLUMNS,
    DatasetReadError,
    FieldMapping,
    HubUnreachableError,
    LoadResult,
    load_benchmark,
    load_file,
    load_gsm8k,
    load_hf_dataset,
    load_humaneval,
    load_mmlu,
    load_norobots,
)
from schemas.datasets import ExamplesSchema

SHIPPED_COUNTS = {
    "gsm8k": {"train": 7473, "test": 1319},
    "humaneval": {"test": 164},
    "mmlu": {"dev": 285, "val": 1542, "test": 14079},
    "norobots": {"train": 16, "test": 4},
}


@pytest.fixture(scope="module")
def shipped():
    loaded, seconds = {}, {}
    for name in SHIPPED_COUNTS:
        start = time.perf_counter()
        loaded[name] = load_benchmark(name)
        seconds[name] = time.perf_counter() - start
    return loaded, seconds


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def only_error(result: LoadResult):
    assert len(result.errors) == 1, [error.message for error in result.errors]
    return result.errors[0]


def test_example_columns_match_the_schema():
    assert list(EXAMPLE_COLUMNS) == list(ExamplesSchema.to_schema().columns)


@pytest.mark.parametrize("name", sorted(SHIPPED_COUNTS))
def test_shipped_benchmark_loads_whole_and_validates(shipped, name):
    result = shipped[0][name]
    assert result.errors == []
    assert Counter(record["split"] for record in result.records) == SHIPPED_COUNTS[name]
    frame = ExamplesSchema.validate(pd.DataFrame(result.records))
    assert list(frame.columns) == list(EXAMPLE_COLUMNS)
    for record in result.records[:50]:
        messages = json.loads(record["messages"])
        assert [message["role"] for message in messages][-1] == "assistant"
        assert isinstance(json.loads(record["metadata"]), dict)


def test_loading_shipped_benchmarks_is_fast(shipped):
    seconds = shipped[1]
    assert seconds["mmlu"] < 10, seconds
    assert sum(seconds.values()) < 15, seconds


def test_registry_lists_the_shipped_benchmarks():
    assert sorted(BUILTIN_DATASETS) == ["gsm8k", "humaneval", "mmlu", "norobots"]
    for name, benchmark in BUILTIN_DATASETS.items():
        assert benchmark.default_root.is_dir()
        assert set(benchmark.splits) == set(SHIPPED_COUNTS[name])


def test_mmlu_record_shape(shipped):
    record = next(
        r for r in shipped[0]["mmlu"].records if r["split"] == "dev" and r["example_id"] == "anatomy-0001"
    )
    assert record["source"] == "mmlu/data/dev/anatomy_dev.csv:1"
    assert record["input"].startswith(
        "What is the embryological origin of the hyoid bone?\nA. The first pharyngeal arch\n"
    )
    assert record["input"].endswith("\nD. The second and third pharyngeal arches")
    assert record["target"] == "3"
    assert json.loads(record["messages"])[1] == {"role": "assistant", "content": "D"}
    metadata = json.loads(record["metadata"])
    assert (
        metadata["subject"] == "anatomy"
        and metadata["answer_letter"] == "D"
        and len(metadata["choices"]) == 4
    )


def test_gsm8k_record_shape(shipped):
    record = shipped[0]["gsm8k"].records[0]
    assert (record["split"], record["example_id"], record["source"]) == (
        "train",
        "train-000001",
        "gsm8k/train.jsonl:1",
    )
    assert record["target"] == "72"
    assert "#### 72" in json.loads(record["messages"])[1]["content"]
    assert "####" not in json.loads(record["metadata"])["reasoning"]


def test_humaneval_and_norobots_record_shape(shipped):
    task = shipped[0]["humaneval"].records[0]
    assert task["example_id"] == "HumanEval/0" and task["source"] == "humaneval/HumanEval.jsonl.gz:1"
    assert json.loads(task["metadata"])["entry_point"] == "has_close_elements"
    chat = next(r for r in shipped[0]["norobots"].records if len(json.loads(r["messages"])) > 2)
    assert chat["target"] == json.loads(chat["messages"])[-1]["content"]
    assert json.loads(chat["metadata"])["category"]


def test_limit_and_splits():
    result = load_benchmark("gsm8k", splits=["test"], limit=5)
    assert [r["example_id"] for r in result.records] == [f"test-{n:06d}" for n in range(1, 6)]
    assert Counter(r["split"] for r in load_benchmark("mmlu", limit=3).records) == {
        "dev": 3,
        "val": 3,
        "test": 3,
    }
    with pytest.raises(ValueError, match="no split 'dev'.*found: train, test"):
        load_benchmark("gsm8k", splits=["dev"])
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        load_benchmark("nope")


def test_gsm8k_bad_rows_become_errors_and_the_rest_load(tmp_path):
    good = json.dumps({"question": "What is 1000 + 234?", "answer": "Add them.\n#### $1,234"})
    write_lines(
        tmp_path / "train.jsonl",
        [
            good,
            '{"question": "broken", "answer": ',
            json.dumps({"question": "No marker", "answer": "It is 4."}),
            json.dumps({"answer": "#### 3"}),
            good.replace("1000", "2000"),
        ],
    )
    result = load_gsm8k(tmp_path)
    assert [(r["example_id"], r["target"]) for r in result.records] == [
        ("train-000001", "1234"),
        ("train-000005", "1234"),
    ]
    assert [(e.line, e.field) for e in result.errors] == [(2, None), (3, "answer"), (4, "question")]
    assert result.errors[0].message.startswith("gsm8k/train.jsonl line 2: invalid JSON")
    assert result.errors[1].message == "gsm8k/train.jsonl line 3: field 'answer' has no '####' line"
    assert result.errors[2].message == "gsm8k/train.jsonl line 4: field 'question' is missing"
    assert result.errors[1].raw == json.dumps({"question": "No marker", "answer": "It is 4."})
    assert result.errors[1].source == "gsm8k/train.jsonl:3"


def test_mmlu_csv_bad_rows_become_errors(tmp_path):
    write_csv(
        tmp_path / "data" / "test" / "astronomy_test.csv",
        [
            ["Which planet is largest?", "Mars", "Jupiter", "Venus", "Earth", "B"],
            ["Which star is nearest?", "Sirius", "Vega", "The Sun", "Rigel", "E"],
            ["Too few columns", "a", "b", "C"],
            ["A question\nover two lines?", "w", "x", "y", "z", "A"],
        ],
    )
    result = load_mmlu(tmp_path)
    assert [(r["example_id"], r["target"], r["source"]) for r in result.records] == [
        ("astronomy-0001", "1", "mmlu/data/test/astronomy_test.csv:1"),
        ("astronomy-0004", "0", "mmlu/data/test/astronomy_test.csv:4"),
    ]
    letter, columns = result.errors
    assert (
        letter.message
        == "mmlu/data/test/astronomy_test.csv line 2: field 'answer' must be one of A, B, C, D, got 'E'"
    )
    assert letter.raw == "Which star is nearest?,Sirius,Vega,The Sun,Rigel,E\r\n"
    assert columns.message == (
        "mmlu/data/test/astronomy_test.csv line 3: expected 6 columns (question,A,B,C,D,answer), got 4"
    )


def test_mmlu_table_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "question": "2 + 2?",
            "subject": "elementary_mathematics",
            "choices": ["3", "4", "5", "6"],
            "answer": 1,
        },
        {
            "question": "Capital of France?",
            "subject": "geography",
            "choices": ["Paris", "Rome", "Oslo", "Bern"],
            "answer": 0,
        },
        {"question": "Bad answer", "subject": "geography", "choices": ["a", "b", "c", "d"], "answer": 4},
        {"question": "Three choices", "subject": "geography", "choices": ["a", "b", "c"], "answer": 0},
    ]
    (tmp_path / "all").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "all" / "test-00000-of-00001.parquet")
    write_lines(tmp_path / "all" / "dev.jsonl", [json.dumps(rows[0])])
    result = load_mmlu(tmp_path)
    assert [(r["split"], r["example_id"], r["target"]) for r in result.records] == [
        ("dev", "elementary_mathematics-0001", "1"),
        ("test", "elementary_mathematics-0001", "1"),
        ("test", "geography-0001", "0"),
    ]
    assert [(e.line, e.field) for e in result.errors] == [(3, "answer"), (4, "choices")]
    assert json.loads(result.errors[0].raw)["answer"] == 4
    ExamplesSchema.validate(pd.DataFrame(result.records))


def test_humaneval_gz_and_duplicate_ids(tmp_path):
    task = {
        "task_id": "HumanEval/0",
        "prompt": "def f():\n",
        "canonical_solution": "    return 1\n",
        "test": "def check(c):\n    assert c() == 1\n",
        "entry_point": "f",
    }
    lines = [json.dumps(task), json.dumps(task), json.dumps({**task, "task_id": "HumanEval/1", "test": 3})]
    (tmp_path / "HumanEval.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    result = load_humaneval(tmp_path)
    assert [r["example_id"] for r in result.records] == ["HumanEval/0"]
    assert [e.message for e in result.errors] == [
        "humaneval/HumanEval.jsonl.gz line 2: repeats example id 'HumanEval/0' first seen at "
        "humaneval/HumanEval.jsonl.gz:1",
        "humaneval/HumanEval.jsonl.gz line 3: field 'test' must be a string, got int",
    ]


def test_norobots_validates_roles_and_content(tmp_path):
    def row(prompt_id, messages):
        return json.dumps({"prompt": "Hi", "prompt_id": prompt_id, "messages": messages, "category": "Chat"})

    write_lines(
        tmp_path / "train.jsonl",
        [
            row("a", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]),
            row("b", [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello!"}]),
            row("c", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]),
            row("d", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]),
        ],
    )
    result = load_norobots(tmp_path)
    assert [(r["example_id"], r["target"]) for r in result.records] == [("a", "Hello!")]
    assert [e.problem for e in result.errors] == [
        "message 2 has role 'bot', expected one of system, user, assistant",
        "message 2 (assistant) has empty or non-text content",
        "has no assistant message",
    ]
    assert {e.field for e in result.errors} == {"messages"}


def test_a_dataset_with_nothing_readable_raises_a_clear_error(tmp_path):
    with pytest.raises(DatasetReadError, match="gsm8k: data folder .*missing does not exist"):
        load_gsm8k(tmp_path / "missing")
    (tmp_path / "HumanEval.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetReadError, match="humaneval: no data could be read: humaneval/HumanEval.jsonl.gz: "
                                               "not a complete gzip file") as raised:
        load_humaneval(tmp_path)
    assert [error.file for error in raised.value.file_errors] == ["humaneval/HumanEval.jsonl.gz"]
    (tmp_path / "data" / "dev").mkdir(parents=True)
    (tmp_path / "data" / "dev" / "x_dev.csv").write_bytes(b"\xff\xfe\x00bad\n")
    result = load_mmlu(tmp_path)
    assert result.records == []
    assert only_error(result).message.startswith("mmlu/data/dev/x_dev.csv line 1: is not valid UTF-8")


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_generic_file_with_a_field_mapping(tmp_path, suffix):
    rows = [
        {"uid": "u1", "q": "Sky colour?", "a": "blue", "level": "easy"},
        {"uid": "u2", "q": "6 x 7?", "a": 42, "level": "easy"},
        {"uid": "u3", "q": "", "a": "nothing", "level": "hard"},
    ]
    path = tmp_path / f"qa.{suffix}"
    if suffix == "jsonl":
        write_lines(path, [json.dumps(row) for row in rows])
    elif suffix == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).astype(str).to_parquet(path)
    result = load_file(
        path, FieldMapping(input="q", target="a", id="uid", split=None), dataset="qa", split="eval"
    )
    assert [(r["example_id"], r["split"], r["target"], r["source"]) for r in result.records] == [
        ("u1", "eval", "blue", f"qa.{suffix}:" + {"csv": "2", "jsonl": "1", "parquet": "rg1:1"}[suffix]),
        ("u2", "eval", "42", f"qa.{suffix}:" + {"csv": "3", "jsonl": "2", "parquet": "rg1:2"}[suffix]),
    ]
    assert json.loads(result.records[0]["metadata"]) == {"level": "easy"}
    assert only_error(result).problem == "is empty" and result.errors[0].field == "q"
    ExamplesSchema.validate(pd.DataFrame(result.records))


def test_generic_split_field_and_generated_ids(tmp_path):
    path = write_lines(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"q": "one", "a": "1", "part": "train"}),
            json.dumps({"q": "two", "a": "2", "part": "test"}),
            json.dumps({"q": "three", "a": "3", "part": "train"}),
            json.dumps({"q": "four", "a": "4"}),
        ],
    )
    result = load_file(path, FieldMapping(input="q", target="a", split="part"), dataset="mixed")
    assert [(r["split"], r["example_id"]) for r in result.records] == [
        ("train", "train-000001"),
        ("test", "test-000002"),
        ("train", "train-000003"),
    ]
    assert only_error(result).message == "mixed.jsonl line 4: field 'part' is missing (it names the split)"


def test_hf_local_files_and_saved_folder(tmp_path):
    import datasets

    path = write_lines(tmp_path / "qa.jsonl", [json.dumps({"q": f"q{n}", "a": str(n)}) for n in range(5)])
    mapping = FieldMapping(input="q", target="a")
    result = load_hf_dataset(
        "json", mapping, dataset="qa", data_files={"train": str(path)}, cache_dir=str(tmp_path / "cache")
    )
    assert [(r["split"], r["example_id"], r["target"], r["source"]) for r in result.records][:2] == [
        ("train", "train-000001", "0", "json/train:1"),
        ("train", "train-000002", "1", "json/train:2"),
    ]
    assert len(result.records) == 5 and result.errors == []

    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"q": "a", "a": "1"}, {"q": "b", "a": "2"}]),
            "test": datasets.Dataset.from_list([{"q": "c", "a": "3"}]),
        }
    ).save_to_disk(str(saved))
    result = load_hf_dataset(saved, mapping, dataset="qa")
    assert Counter(r["split"] for r in result.records) == {"train": 2, "test": 1}
    assert load_hf_dataset(saved, mapping, dataset="qa", split="test").records[0]["source"] == "saved/test:1"
    ExamplesSchema.validate(pd.DataFrame(result.records))


def test_hf_hub_unreachable_suggests_a_local_path(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachableError, match="hub is unreachable .*HF_HUB_OFFLINE.*local path"):
        load_hf_dataset(
            "openai/gsm8k", FieldMapping(input="question", target="answer"), dataset="gsm8k", name="main"
        )


# -- one record never sinks a load: each break a hostile tester found ---------------------------

QA = FieldMapping(input="input", target="target")


def qa_line(number, **extra):
    return json.dumps({"input": f"question {number}", "target": str(number), **extra})


def test_deep_nesting_costs_only_its_own_line(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [
        qa_line(1),
        '{"input": ' + "[" * 100_000 + "]" * 100_000 + ', "target": "t"}',  # the JSON decoder's RecursionError
        '{"input": "q", "target": "t", "extra": ' + '{"a": ' * 150 + "1" + "}" * 150 + "}",
        qa_line(4, extra=[[[["fine at four levels"]]]]),
    ])
    result = load_file(path, QA, dataset="qa")
    assert [r["source"] for r in result.records] == ["qa.jsonl:1", "qa.jsonl:4"]
    assert [e.message for e in result.errors] == [
        "qa.jsonl line 2: invalid JSON: nested too deep to parse (rows may nest at most 100 levels)",
        "qa.jsonl line 3: field 'extra.a.a' is nested more than 100 levels deep",
    ]


def test_a_lone_surrogate_anywhere_in_a_row_costs_only_that_row(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [
        '{"input": "\\ud800", "target": "t"}',
        '{"input": "q", "target": "t", "tags": ["ok", {"note": "x\\udfffy"}]}',
        '{"input": "q", "target": "t", "k\\udc00": 1}',
        '{"input": "a pair \\ud83d\\ude00 is fine", "target": "t"}',
    ])
    result = load_file(path, QA, dataset="qa")
    assert [r["input"] for r in result.records] == ["a pair 😀 is fine"]
    assert [(e.line, e.problem) for e in result.errors] == [
        (1, "field 'input' holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text"),
        (2, "field 'tags[1].note' holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text"),
        (3, "the row has a key with a lone surrogate ('k\\\\udc00'), which is not text"),
    ]
    import pyarrow as pa

    pa.Table.from_pandas(result.to_frame())  # what failed before: Arrow cannot encode a lone surrogate
    assert all(error.raw.encode("utf-8") for error in result.errors)  # quarantinable as text


def test_an_undecodable_csv_line_is_one_bad_row_with_its_line(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes(b"\xef\xbb\xbfinput,target\nfirst,1\nbad \xff byte,2\n\"spans\nline \xfe four\",3\nlast,4\n")
    result = load_file(path, QA, dataset="qa")
    assert [(r["input"], r["source"]) for r in result.records] == [("first", "qa.csv:2"), ("last", "qa.csv:6")]
    assert [e.message for e in result.errors] == [
        "qa.csv line 3: is not valid UTF-8 (invalid start byte at byte 5)",
        "qa.csv line 4: its line 5 is not valid UTF-8 (invalid start byte at byte 6)",
    ]
    assert result.errors[0].raw == "bad \\xff byte,2\n"
    path.write_bytes(b"inp\xffut,target\nfirst,1\n")
    with pytest.raises(DatasetReadError, match=r"qa.csv: the header row \(line 1\) cannot be read: is not valid UTF-8"):
        load_file(path, QA, dataset="qa")


def test_an_unreadable_file_is_reported_and_the_other_files_load(tmp_path):
    write_lines(tmp_path / "train.jsonl", [json.dumps({"question": "1 + 1?", "answer": "It is 2.\n#### 2"})])
    whole = gzip.compress(b"\n".join(json.dumps({"question": "q", "answer": "#### 1"}).encode() for _ in range(50)))
    (tmp_path / "test.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "dev.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "val.jsonl").symlink_to(tmp_path / "gone.jsonl")
    (tmp_path / "folder.jsonl").mkdir()  # a folder named like a data file is not a file of the dataset
    result = load_gsm8k(tmp_path)
    assert [r["source"] for r in result.records] == ["gsm8k/train.jsonl:1"] and result.errors == []
    problems = {error.file: error.problem for error in result.file_errors}
    assert set(problems) == {"gsm8k/test.jsonl.gz", "gsm8k/extra/dev.parquet", "gsm8k/val.jsonl"}
    assert problems["gsm8k/test.jsonl.gz"].startswith("not a complete gzip file (truncated or corrupt")
    assert problems["gsm8k/extra/dev.parquet"].startswith("not a readable Parquet file")
    assert "No such file or directory" in problems["gsm8k/val.jsonl"]
    assert result.rows_in == 4
    assert [source for _, source, _ in result.quarantine_records()] == list(problems)
    with pytest.raises(DatasetReadError, match="is a folder, not a data file"):
        load_file(tmp_path / "folder.jsonl", QA, dataset="qa")


def parquet_with_row_groups(path, rows, group_size):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group_size)
    return pq.ParquetFile(path).metadata


def test_a_corrupt_parquet_row_group_is_one_error_and_the_other_groups_load(tmp_path):
    path = tmp_path / "qa.parquet"
    metadata = parquet_with_row_groups(path, [{"input": f"q{n}", "target": str(n)} for n in range(9)], 3)
    column = metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(data))
    result = load_file(path, QA, dataset="qa")
    assert [(r["source"], r["example_id"]) for r in result.records] == [
        ("qa.parquet:rg1:1", "train-000001"), ("qa.parquet:rg1:2", "train-000002"),
        ("qa.parquet:rg1:3", "train-000003"), ("qa.parquet:rg3:1", "train-000007"),
        ("qa.parquet:rg3:2", "train-000008"), ("qa.parquet:rg3:3", "train-000009"),
    ]
    error = result.file_errors[0]
    assert len(result.file_errors) == 1 and error.row_group == 2 and error.source == "qa.parquet:rg2"
    assert error.message.startswith("qa.parquet row group 2: cannot be read, so its 3 rows are not loaded (")
    (tmp_path / "bad.parquet").write_text("input,target\nnot,parquet\n")
    with pytest.raises(DatasetReadError, match="qa: no data could be read: bad.parquet: not a readable Parquet file"):
        load_file(tmp_path / "bad.parquet", QA, dataset="qa")


def test_parquet_bad_rows_name_their_row_group_and_row(tmp_path):
    path = tmp_path / "qa.parquet"
    parquet_with_row_groups(path, [{"input": "q1", "target": "1"}, {"input": "q2", "target": "2"},
                                   {"input": "q3", "target": "3"}, {"input": "", "target": "4"}], 2)
    error = only_error(load_file(path, QA, dataset="qa"))
    assert (error.message, error.source) == ("qa.parquet row group 2 row 2: field 'input' is empty", "qa.parquet:rg2:2")


def test_binary_parquet_columns_are_text_when_mapped_and_base64_in_metadata(tmp_path):
    import base64

    from crucible.data.loaders import BINARY_MARKER

    path = tmp_path / "qa.parquet"
    parquet_with_row_groups(path, [
        {"input": "é?".encode(), "target": b"yes", "blob": b"\x00\xff\x10"},
        {"input": b"\xff\xfe", "target": b"no", "blob": b""},
    ], 10)
    result = load_file(path, QA, dataset="qa")
    record = result.records[0]
    assert (record["input"], record["target"]) == ("é?", "yes")
    blob = json.loads(record["metadata"])["blob"]
    assert blob == {BINARY_MARKER: base64.b64encode(b"\x00\xff\x10").decode()}
    assert "b'" not in record["metadata"]  # not the Python repr of the bytes
    error = only_error(result)
    assert (error.field, error.problem.split(";")[0]) == ("input", "is binary data (2 bytes) that is not UTF-8 text")
    assert json.loads(error.raw)["input"] == {BINARY_MARKER: "//4="}


def test_other_unparseable_values_cost_only_their_line(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [
        '{"input": "q", "target": "t", "n": ' + "9" * 5000 + "}",
        "[1, 2]",
        qa_line(3),
    ])
    path.write_bytes(path.read_bytes() + b'{"input": "caf\xc3"}\n')
    result = load_file(path, QA, dataset="qa")
    assert [r["source"] for r in result.records] == ["qa.jsonl:3"]
    assert [(e.line, e.problem.split(" (")[0]) for e in result.errors] == [
        (1, "invalid JSON"), (2, "expected a JSON object, got list"), (4, "is not valid UTF-8")]


def test_a_parquet_value_python_cannot_hold_costs_only_its_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    when = pa.array([0, 253_402_300_800 * 10, 60], pa.timestamp("s"))  # the middle one is past year 9999
    pq.write_table(pa.table({"input": ["a", "b", "c"], "target": ["1", "2", "3"], "when": when}),
                   tmp_path / "qa.parquet")
    result = load_file(tmp_path / "qa.parquet", QA, dataset="qa")
    assert [r["input"] for r in result.records] == ["a", "c"]
    error = only_error(result)
    assert error.message.startswith("qa.parquet row group 1 row 2: has a value Python cannot hold (")
    assert 'input: [["b"]]' in error.raw and "<value out of range" in error.raw
