"""What every loader shares: the result types, readers that turn JSONL/JSON/CSV/Parquet files into
raw rows, and the collector that turns raw rows into examples-table records while keeping bad rows."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

# The columns of schemas.datasets.ExamplesSchema, in order (kept here so loaders need no pandera).
EXAMPLE_COLUMNS = ("dataset", "split", "example_id", "input", "target", "messages", "metadata", "source")

CHAT_ROLES = ("system", "user", "assistant")

# Common split names first, in the order people read them; others follow alphabetically.
_SPLIT_ORDER = ("train", "dev", "val", "validation", "test")

_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")


class DatasetReadError(OSError):
    """A data file or folder that cannot be read at all (as opposed to one bad row in it)."""


@dataclasses.dataclass(frozen=True)
class LoadError:
    """One input row that could not be loaded; ``raw`` is its text, so it can be quarantined.

    ``line`` is the 1-based line where the row starts; Parquet files and Hugging Face datasets
    have no lines, so there it is the 1-based row number.
    """

    file: str
    line: int
    field: str | None
    problem: str
    raw: str

    @property
    def source(self) -> str:
        """Where the row came from, in the format of the examples table's ``source`` column."""
        return f"{self.file}:{self.line}"

    @property
    def message(self) -> str:
        what = f"field '{self.field}' {self.problem}" if self.field else self.problem
        return f"{self.file} line {self.line}: {what}"

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass
class LoadResult:
    """Records in ExamplesSchema columns (``messages`` and ``metadata`` as JSON text) and bad rows."""

    records: list[dict[str, str]] = dataclasses.field(default_factory=list)
    errors: list[LoadError] = dataclasses.field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        self.records.extend(other.records)
        self.errors.extend(other.errors)

    def to_frame(self):
        """The records as a pandas DataFrame with exactly the examples-table columns."""
        import pandas as pd

        return pd.DataFrame(self.records, columns=list(EXAMPLE_COLUMNS))


class RecordProblem(ValueError):
    """Raised by a row normalizer: ``field`` (None for the whole row) has ``problem``."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(f"field '{field}' {problem}" if field else problem)
        self.field = field
        self.problem = problem


class RawRow(NamedTuple):
    """One row as read from a file, before normalization.

    ``line`` is where it starts (1-based), ``index`` its 1-based position among the file's rows,
    ``value`` the parsed object (None when ``problem`` says why it could not be parsed).
    """

    line: int
    index: int
    raw: str
    value: Any
    problem: str | None = None


class Example(NamedTuple):
    """A normalized example, before it is given its dataset, split and source."""

    example_id: str
    input: str
    target: str
    messages: list[dict[str, str]]
    metadata: dict[str, Any]


Normalizer = Callable[[RawRow, str], Example]


def read_file_bytes(path: Path, label: str) -> bytes:
    """The file's bytes, gunzipped for ``*.gz``; a clear error naming the file if that fails."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.endswith(".gz") else data
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetReadError(f"cannot read {label} ({path}): {exc}") from exc


def iter_json_lines(path: Path, label: str) -> Iterator[RawRow]:
    """One raw row per non-blank line of a JSON Lines file (plain or gzip)."""
    index = 0
    for number, line in enumerate(read_file_bytes(path, label).split(b"\n"), start=1):
        if not line.strip():
            continue
        index += 1
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            yield RawRow(number, index, line.decode("utf-8", "replace"), None, f"is not valid UTF-8 ({exc.reason})")
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRow(number, index, text, None, f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(value, dict):
            yield RawRow(number, index, text, None, f"expected a JSON object, got {type(value).__name__}")
            continue
        yield RawRow(number, index, text, value)


def iter_json_file(path: Path, label: str) -> Iterator[RawRow]:
    """A ``.json`` file: either one JSON array of objects (rows numbered 1..n) or JSON Lines."""
    data = read_file_bytes(path, label)
    if not data.lstrip().startswith(b"["):
        yield from iter_json_lines(path, label)
        return
    try:
        items = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetReadError(f"cannot read {label}: not a valid JSON array ({exc})") from exc
    for index, item in enumerate(items, start=1):
        raw = json.dumps(item, ensure_ascii=False)
        if isinstance(item, dict):
            yield RawRow(index, index, raw, item)
        else:
            yield RawRow(index, index, raw, None, f"expected a JSON object, got {type(item).__name__}")


def iter_csv_rows(path: Path, label: str, *, header: bool) -> Iterator[RawRow]:
    """CSV rows as lists of strings, or as dicts keyed by the header row when ``header`` is true.

    Quoted fields may span lines; each row's ``line`` is the line it starts on and ``raw`` its text.
    """
    try:
        text = read_file_bytes(path, label).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetReadError(f"cannot read {label}: not UTF-8 text ({exc})") from exc
    pending: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            pending.append(line)
            yield line

    reader = csv.reader(lines())
    columns: list[str] | None = None
    next_line, index = 1, 0
    while True:
        try:
            row = next(reader)
            problem = None
        except StopIteration:
            return
        except csv.Error as exc:
            row, problem = None, f"malformed CSV ({exc})"
        start, raw = next_line, "".join(pending)
        next_line += len(pending)
        pending.clear()
        if row == []:
            continue
        if header and columns is None and problem is None:
            columns = row
            continue
        index += 1
        if problem is not None:
            yield RawRow(start, index, raw, None, problem)
        elif columns is None:
            yield RawRow(start, index, raw, row)
        elif len(row) != len(columns):
            yield RawRow(start, index, raw, None,
                         f"expected {len(columns)} columns ({','.join(columns)}), got {len(row)}")
        else:
            yield RawRow(start, index, raw, dict(zip(columns, row, strict=True)))


def iter_parquet_rows(path: Path, label: str) -> Iterator[RawRow]:
    """Parquet rows as dicts, numbered 1..n."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises OSError or ArrowInvalid, depending on what is wrong
        raise DatasetReadError(f"cannot read {label} ({path}): {exc}") from exc
    for index, row in enumerate(rows, start=1):
        yield RawRow(index, index, json.dumps(row, ensure_ascii=False, default=str), row)


def iter_file_rows(path: Path, label: str) -> Iterator[RawRow]:
    """Rows of a data file, read according to its extension (CSV files must have a header row)."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return iter_json_lines(path, label)
    if name.endswith((".json", ".json.gz")):
        return iter_json_file(path, label)
    if name.endswith(".csv"):
        return iter_csv_rows(path, label, header=True)
    if name.endswith(".parquet"):
        return iter_parquet_rows(path, label)
    raise DatasetReadError(f"cannot read {label}: unknown file type (expected .jsonl, .json, .csv or .parquet)")


def split_of_file(path: Path) -> str:
    """The split a data file holds, from its name: ``train.jsonl`` and ``train-00000-of-00001.parquet``."""
    name = path.name
    for suffix in _DATA_SUFFIXES + (".csv",):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _SHARD_SUFFIX.sub("", name)


def split_sort_key(split: str) -> tuple[int, str]:
    return (_SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else len(_SPLIT_ORDER), split)


def discover_split_files(root: Path, aliases: Mapping[str, str] | None = None) -> dict[str, list[Path]]:
    """Data files under ``root`` grouped by split, in the layouts datasets are published in.

    ``<split>.jsonl[.gz]``, ``<split>.json`` and ``<split>.parquet`` at any depth, including the
    Hugging Face hub's shards ``data/<split>-00000-of-00001.parquet``. ``aliases`` maps a file's
    lower-cased name to a split name (HumanEval ships as ``HumanEval.jsonl.gz``, its test split).
    """
    aliases = aliases or {}
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.name.startswith((".", "_")) or not path.name.lower().endswith(_DATA_SUFFIXES):
            continue
        if not path.is_file():
            continue
        split = split_of_file(path)
        found.setdefault(aliases.get(split.lower(), split), []).append(path)
    return {split: found[split] for split in sorted(found, key=split_sort_key)}


def check_root(dataset: str, root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetReadError(f"{dataset}: data folder {root} does not exist or is not a folder")
    return root


def choose_splits(dataset: str, root: Path, available: Iterable[str], wanted: Iterable[str] | None) -> list[str]:
    """The requested splits (all available ones by default); a clear error for one that is absent."""
    available = list(available)
    if not available:
        raise DatasetReadError(f"{dataset}: no data files found under {root}")
    if wanted is None:
        return available
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [split for split in wanted if split not in available]
    if missing:
        raise ValueError(f"{dataset}: no split {', '.join(map(repr, missing))} under {root}; "
                         f"found: {', '.join(available)}")
    return wanted


def require_text(row: Mapping[str, Any], field: str, *, allow_empty: bool = False) -> str:
    """``row[field]`` as a string; a RecordProblem naming the field if it is missing, not text or empty."""
    value = row.get(field)
    if value is None:
        raise RecordProblem(field, "is missing")
    if not isinstance(value, str):
        raise RecordProblem(field, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RecordProblem(field, "is empty")
    return value


def parse_messages(value: Any, field: str = "messages") -> list[dict[str, str]]:
    """A chat as a list of ``{role, content}``: roles in system/user/assistant, content non-empty.

    Accepts the list itself or its JSON text; extra keys on a message are dropped.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordProblem(field, f"is not valid JSON ({exc.msg})") from None
    if value is None:
        raise RecordProblem(field, "is missing")
    if not isinstance(value, list | tuple) or not value:
        raise RecordProblem(field, "must be a non-empty list of {role, content} messages")
    messages = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, Mapping):
            raise RecordProblem(field, f"message {number} is not an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise RecordProblem(field, f"message {number} has role {role!r}, expected one of {', '.join(CHAT_ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise RecordProblem(field, f"message {number} ({role}) has empty or non-text content")
        messages.append({"role": role, "content": content})
    return messages


def chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


class SplitCollector:
    """Collects one split's records: keeps bad rows as errors, ids unique, stops at ``limit`` records."""

    def __init__(self, result: LoadResult, dataset: str, split: str, limit: int | None = None):
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.result, self.dataset, self.split, self.limit = result, dataset, split, limit
        self.count = 0
        self._first_seen: dict[str, str] = {}

    @property
    def full(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    def add(self, row: RawRow, file_label: str, normalize: Normalizer) -> None:
        if row.problem is not None:
            self._reject(row, file_label, None, row.problem)
            return
        try:
            example = normalize(row, self.split)
        except RecordProblem as problem:
            self._reject(row, file_label, problem.field, problem.problem)
            return
        source = f"{file_label}:{row.line}"
        first = self._first_seen.setdefault(example.example_id, source)
        if first != source:
            self._reject(row, file_label, None, f"repeats example id {example.example_id!r} first seen at {first}")
            return
        self.result.records.append({
            "dataset": self.dataset,
            "split": self.split,
            "example_id": example.example_id,
            "input": example.input,
            "target": example.target,
            "messages": json.dumps(example.messages, ensure_ascii=False),
            "metadata": json.dumps(example.metadata, ensure_ascii=False, default=str),
            "source": source,
        })
        self.count += 1

    def add_rows(self, rows: Iterable[RawRow], file_label: str, normalize: Normalizer) -> None:
        for row in rows:
            if self.full:
                return
            self.add(row, file_label, normalize)

    def _reject(self, row: RawRow, file_label: str, field: str | None, problem: str) -> None:
        self.result.errors.append(LoadError(file_label, row.line, field, problem, row.raw))


def load_split_files(dataset: str, root: Path, files: Mapping[str, list[Path]], splits: Iterable[str] | None,
                     limit: int | None, normalize: Normalizer) -> LoadResult:
    """Load each chosen split's files with ``normalize``; file labels are ``<dataset>/<path in root>``."""
    result = LoadResult()
    for split in choose_splits(dataset, root, files, splits):
        collector = SplitCollector(result, dataset, split, limit)
        for path in files[split]:
            if collector.full:
                break
            label = f"{dataset}/{path.relative_to(root).as_posix()}"
            collector.add_rows(iter_file_rows(path, label), label, normalize)
    return result
