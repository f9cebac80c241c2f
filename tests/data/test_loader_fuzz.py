"""Fuzzed user files: 10,000 records with every kind of corruption mixed among valid ones; nothing is
lost (rows in = accepted + quarantined), each row lands where its kind says, and every quarantined row
names its file and line, in the loader and through a real materialization into a temporary lake."""

import csv
import dataclasses
import io
import json
import random
from collections import Counter

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from crucible.data.loaders import FieldMapping, load_file
from schemas import EXAMPLES, QUARANTINE
from schemas.datasets import ExamplesSchema

RECORDS = 10_000
MAPPING = FieldMapping(input="input", target="target", id="id")
# Text valid rows draw from: non-BMP characters (a surrogate *pair* in JSON escapes), NUL, quotes,
# commas, backslashes and line breaks inside values.
ALPHABET = ["a", "b", "z", " ", "é", "中", "😀", "𝄞", "\x00", '"', ",", "\\", "\t", "Ω"]


@dataclasses.dataclass(frozen=True)
class Planted:
    line: int
    kind: str
    accepted: bool


# What each rejected kind's problem says (a cut inside a multi-byte character reads as bad UTF-8).
JSONL_REASONS = {
    "truncated": ("invalid JSON", "not valid UTF-8"), "repeated_bad": "invalid JSON", "bad_utf8": "not valid UTF-8",
    "deep": "nested", "surrogate": "lone surrogate", "non_object": "expected a JSON object",
    "missing": "is missing", "empty": "is empty", "duplicate": "repeats example id", "huge_int": "invalid JSON",
}
CSV_REASONS = {
    "bad_utf8": "is not valid UTF-8", "bad_utf8_multiline": "its line", "repeated_bad": "is not valid UTF-8",
    "columns": "expected 4 columns", "empty": "is empty", "duplicate": "repeats example id",
    "stray_quote": "malformed CSV", "field_limit": "field larger than field limit", "unclosed_quote": "malformed CSV",
}


def _text(rng: random.Random, low: int = 1, high: int = 40, alphabet: list[str] = ALPHABET) -> str:
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))
    return text if text.strip() or not low else text + "q"


class _Writer:
    """Accumulates records' bytes and the line each starts on."""

    def __init__(self, first_line: int):
        self.chunks: list[bytes] = []
        self.planted: list[Planted] = []
        self.line = first_line

    def blank(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.line += chunk.count(b"\n")

    def record(self, kind: str, accepted: bool, chunk: bytes) -> None:
        self.planted.append(Planted(self.line, kind, accepted))
        self.chunks.append(chunk)
        self.line += len(chunk.splitlines())


JSONL_KINDS = {"valid": 60, "truncated": 5, "bad_utf8": 5, "deep": 3, "surrogate": 5, "non_object": 4,
               "missing": 4, "empty": 4, "duplicate": 4, "long": 0.05, "repeated_bad": 4, "huge_int": 0.5}


def fuzz_jsonl(seed: int, records: int = RECORDS) -> tuple[bytes, list[Planted]]:
    """A JSON Lines file of ``records`` records (blank lines between some) and what each one is."""
    rng = random.Random(seed)
    out, ids = _Writer(1), []
    kinds, weights = zip(*JSONL_KINDS.items(), strict=True)

    def dumps(row: dict) -> bytes:
        return json.dumps(row, ensure_ascii=rng.random() < 0.5).encode()

    for number in range(records):
        if rng.random() < 0.02:
            out.blank(rng.choice([b"\n", b"   \n", b"\r\n"]))
        kind = rng.choices(kinds, weights)[0]
        if kind == "duplicate" and not ids:
            kind = "valid"
        row = {"id": f"r{number}", "input": _text(rng), "target": _text(rng, 0, 10), "tags": [_text(rng)]}
        accepted = kind in ("valid", "long")
        if kind == "valid":
            body = dumps(row)
        elif kind == "long":
            body = dumps({**row, "input": "x" * 300_000 + "😀"})
        elif kind == "truncated":
            whole = dumps(row)
            body = whole[: rng.randint(1, len(whole) - 2)].rstrip(b"\r\n") or b"{"
        elif kind == "bad_utf8":
            body = dumps({**row, "input": "left@@right"}).replace(
                b"@@", rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82"]))
        elif kind == "deep":
            depth = rng.choice([120, 1_000, 50_000])
            body = (b'{"id": "%s", "input": ' % row["id"].encode() + b"[" * depth + b"]" * depth
                    + b', "target": "t"}')
        elif kind == "surrogate":
            lone = rng.choice(["\\ud800", "\\udfff", "\\ud83dA"])
            body = rng.choice([
                '{"id": "%s", "input": "x%sy", "target": "t"}',
                '{"id": "%s", "input": "q", "target": "t", "tags": ["ok", {"deep": "%s"}]}',
                '{"id": "%s", "input": "q", "target": "t", "k%s": 1}',
            ]).replace("%s", row["id"], 1).replace("%s", lone).encode()
        elif kind == "non_object":
            body = rng.choice([b"[1, 2]", b'"text"', b"42", b"null", b"true"])
        elif kind == "missing":
            dropped = rng.choice(["input", "target", "id"])
            body = dumps({key: value for key, value in row.items() if key != dropped})
        elif kind == "empty":
            body = dumps({**row, rng.choice(["input", "id"]): rng.choice(["", "   "])})
        elif kind == "duplicate":
            body = dumps({**row, "id": rng.choice(ids)})
        elif kind == "huge_int":
            body = b'{"id": "%s", "input": "q", "target": "t", "n": %s}' % (row["id"].encode(), b"9" * 5_000)
        else:  # repeated_bad: the very same bytes every time
            body = b'{"id": "same", "input": "never closed'
        if kind == "valid":
            ids.append(row["id"])
        out.record(kind, accepted, body + (b"\r\n" if rng.random() < 0.05 else b"\n"))
    return b"".join(out.chunks), out.planted


CSV_ALPHABET = [char for char in ALPHABET if char != "\x00"]
CSV_KINDS = {"valid": 60, "multiline": 5, "bad_utf8": 6, "bad_utf8_multiline": 2, "columns": 5, "empty": 5,
             "duplicate": 5, "stray_quote": 3, "long": 0.05, "field_limit": 0.05, "repeated_bad": 4}


def fuzz_csv(seed: int, records: int = RECORDS) -> tuple[bytes, list[Planted]]:
    """A CSV file (header ``id,input,target,note``) of ``records`` records and what each one is."""
    rng = random.Random(seed)
    out, ids = _Writer(2), []
    out.chunks.append(b"id,input,target,note\n")
    kinds, weights = zip(*CSV_KINDS.items(), strict=True)

    def row_bytes(*fields: str) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(fields)
        return buffer.getvalue().encode()

    for number in range(records - 1):
        if rng.random() < 0.02:
            out.blank(b"\n")
        kind = rng.choices(kinds, weights)[0]
        if kind == "duplicate" and not ids:
            kind = "valid"
        row_id, text, target = f"r{number}", _text(rng, alphabet=CSV_ALPHABET), _text(rng, 0, 10, CSV_ALPHABET)
        accepted = kind in ("valid", "multiline", "long")
        if kind == "valid":
            body = row_bytes(row_id, text, target, _text(rng))
        elif kind == "multiline":
            body = row_bytes(row_id, f"{text}\nsecond line", target, "")
        elif kind == "bad_utf8":
            body = row_bytes(row_id, "left@@right", target, "").replace(b"@@", rng.choice([b"\xff", b"\xc3\x28"]))
        elif kind == "bad_utf8_multiline":
            body = row_bytes(row_id, "first\nsecond @@ line", target, "").replace(b"@@", b"\xfe")
        elif kind == "columns":
            body = row_bytes(*[row_id, text, target, "", "extra"][: rng.choice([2, 3, 5])])
        elif kind == "empty":
            body = row_bytes(*rng.choice([(row_id, "", target, ""), ("", text, target, ""), (row_id, "  ", "t", "")]))
        elif kind == "duplicate":
            body = row_bytes(rng.choice(ids), text, target, "")
        elif kind == "stray_quote":
            body = f'{row_id},"ab"cd,{target.replace(chr(34), "")},n\n'.encode()
        elif kind == "long":
            body = row_bytes(row_id, "y" * 100_000, target, "")
        elif kind == "field_limit":
            body = row_bytes(row_id, "y" * 200_000, target, "")
        else:  # repeated_bad: the very same bytes every time
            body = b"same,\xff\xfe,t,n\n"
        if kind == "valid":
            ids.append(row_id)
        out.record(kind, accepted, body)
    # A quote left open at the end runs to the end of the file: one bad record, not a lost file.
    out.record("unclosed_quote", False, b'last,"never closed,t,n\n')
    return b"".join(out.chunks), out.planted


def assert_nothing_lost(result, planted: list[Planted], file: str, reasons_of: dict) -> None:
    assert result.file_errors == []
    assert len(result.records) + len(result.errors) == len(planted) == RECORDS
    accepted = Counter(int(record["source"].rsplit(":", 1)[1]) for record in result.records)
    assert set(accepted) == {p.line for p in planted if p.accepted} and max(accepted.values()) == 1
    by_line = {p.line: p for p in planted}
    assert sorted(error.line for error in result.errors) == sorted(p.line for p in planted if not p.accepted)
    for error in result.errors:
        assert error.file == file and error.source == f"{file}:{error.line}"
        assert error.message.startswith(f"{file} line {error.line}: "), error.message
        reasons = reasons_of[by_line[error.line].kind]
        assert any(reason in error.message for reason in ([reasons] if isinstance(reasons, str) else reasons)), \
            (by_line[error.line], error.message)
    frame = ExamplesSchema.validate(result.to_frame())
    pa.Table.from_pandas(frame)  # what Delta writes: a lone surrogate that slipped through fails here


@pytest.mark.parametrize("seed", [0])
def test_fuzzed_jsonl_loses_nothing_and_names_every_bad_line(tmp_path, seed):
    data, planted = fuzz_jsonl(seed)
    assert {p.kind for p in planted} == set(JSONL_KINDS)
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    result = load_file(path, MAPPING, dataset="fuzz")
    assert_nothing_lost(result, planted, "fuzz.jsonl", JSONL_REASONS)
    long_row = next(r for r in result.records if len(r["input"]) > 300_000)
    assert long_row["input"].endswith("😀")
    repeated = [e for e in result.errors if e.raw == '{"id": "same", "input": "never closed']
    assert len(repeated) == sum(p.kind == "repeated_bad" for p in planted) > 10


@pytest.mark.parametrize("seed", [0])
def test_fuzzed_csv_loses_nothing_and_names_every_bad_line(tmp_path, seed):
    data, planted = fuzz_csv(seed)
    assert {p.kind for p in planted} == set(CSV_KINDS) | {"unclosed_quote"}
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    result = load_file(path, MAPPING, dataset="fuzz")
    assert_nothing_lost(result, planted, "fuzz.csv", CSV_REASONS)
    multiline = next(p for p in planted if p.kind == "bad_utf8_multiline")
    error = next(e for e in result.errors if e.line == multiline.line)
    assert error.problem.startswith(f"its line {multiline.line + 1} is not valid UTF-8")  # names the very line


def test_fuzzed_jsonl_through_a_real_materialization(tmp_path):
    from crucible_assets.datasets.assets import examples
    from resources.datasets import DatasetSourcesResource
    from resources.lake import LakeResource

    drop = tmp_path / "drop"
    drop.mkdir()
    data, planted = fuzz_jsonl(7)
    (drop / "fuzz.jsonl").write_bytes(data)
    (drop / "fuzz.yaml").write_text("id: id\n")
    resources = {"lake": LakeResource(root=str(tmp_path / "lake"), artifacts_root=str(tmp_path / "artifacts")),
                 "dataset_sources": DatasetSourcesResource(drop_folder=str(drop))}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["fuzz"])

    result = dg.materialize([examples], partition_key="fuzz", instance=instance, resources=resources)
    assert result.success
    lake = resources["lake"].lake()
    stored = lake.read(EXAMPLES, where={"dataset": "fuzz"})
    quarantined = lake.read(QUARANTINE)
    quarantined = quarantined[quarantined["table"] == EXAMPLES.path]
    metadata = {key: value.value for key, value in
                result.asset_materializations_for_node("datasets__examples")[0].metadata.items()}

    assert metadata["rows_in"] == RECORDS == metadata["dagster/row_count"] + metadata["quarantined"]
    assert metadata["dagster/row_count"] == len(stored) == sum(p.accepted for p in planted)
    # Identical bad lines stay apart: each quarantined row is keyed by its own file:line.
    assert len(quarantined) == metadata["quarantined"] == sum(not p.accepted for p in planted)
    lines = sorted(int(source.rsplit(":", 1)[1]) for source in pd.concat([stored["source"], quarantined["source"]]))
    assert lines == sorted(p.line for p in planted)
    assert quarantined["source"].str.startswith("fuzz.jsonl:").all()
    assert all(reason.startswith(f"fuzz.jsonl line {source.rsplit(':', 1)[1]}: ")
               for source, reason in zip(quarantined["source"], quarantined["reason"], strict=True))
    first = next(p for p in planted if p.kind == "valid")
    stored_first = stored[stored["source"] == f"fuzz.jsonl:{first.line}"].iloc[0]
    line_text = data.split(b"\n")[first.line - 1].decode().rstrip("\r")
    assert stored_first["input"] == json.loads(line_text)["input"]  # NUL, emoji and escapes survive Delta
