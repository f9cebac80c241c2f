"""What every loader shares: the result types, readers that turn JSONL/JSON/CSV/Parquet files into
raw rows, and the collector that turns raw rows into examples-table records while keeping bad rows.

No single record can sink a load: a row that cannot be parsed or stored (invalid JSON or UTF-8, nested
deeper than ``MAX_NESTING``, a lone surrogate in any string) becomes a LoadError naming its file and
line, and a file (or Parquet row group) that cannot be read at all becomes a FileError while the other
files still load. Binary values (Parquet ``binary`` columns) are text when a mapped text field holds
valid UTF-8, a problem when it does not, and ``{"$base64": "<base64>"}`` anywhere in ``metadata``.
"""

from __future__ import annotations

import base64
import codecs
import csv
import dataclasses
import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

# The columns of schemas.datasets.ExamplesSchema, in order (kept here so loaders need no pandera).
EXAMPLE_COLUMNS = ("dataset", "split", "example_id", "input", "target", "messages", "metadata", "source")

CHAT_ROLES = ("system", "user", "assistant")

# The deepest nesting of objects and arrays a row may have: real data stays far below it, and the
# JSON encoder of the metadata column must not run into Python's recursion limit.
MAX_NESTING = 100

# The key of the object that stands for binary data in ``metadata`` (and in quarantined raw rows).
BINARY_MARKER = "$base64"

# Common split names first, in the order people read them; others follow alphabetically.
_SPLIT_ORDER = ("train", "dev", "val", "validation", "test")

_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")
# A lone surrogate parses from JSON ("\ud800") but cannot be encoded as UTF-8, so Arrow cannot store it.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclasses.dataclass(frozen=True)
class FileError:
    """A file that could not be read at all, or (with ``row_group``) one unreadable Parquet row group.

    ``row_group`` is 1-based (pyarrow's ``read_row_group(row_group - 1)``).
    """

    file: str
    problem: str
    row_group: int | None = None

    @property
    def source(self) -> str:
        """The file (and row group), in the format of the examples table's ``source`` column."""
        return self.file if self.row_group is None else f"{self.file}:rg{self.row_group}"

    @property
    def message(self) -> str:
        where = self.file if self.row_group is None else f"{self.file} row group {self.row_group}"
        return f"{where}: {self.problem}"

    def __str__(self) -> str:
        return self.message


class DatasetReadError(OSError):
    """A data file or folder that cannot be read at all (as opposed to one bad row in it).

    ``file_errors`` lists the files that failed when a whole load had nothing it could read.
    """

    def __init__(self, message: str, file_errors: Sequence[FileError] = ()):
        super().__init__(message)
        self.file_errors = list(file_errors)


class FileReadError(DatasetReadError):
    """Raised by a reader: ``file`` cannot be read because of ``problem``."""

    def __init__(self, file: str, problem: str):
        super().__init__(f"cannot read {file}: {problem}")
        self.file, self.problem = file, problem


@dataclasses.dataclass(frozen=True)
class LoadError:
    """One input row that could not be loaded; ``raw`` is its text, so it can be quarantined.

    ``line`` is the 1-based line where the row starts; Hugging Face datasets have no lines, so there
    it is the 1-based row number, and in a Parquet file it is the 1-based row within ``row_group``.
    """

    file: str
    line: int
    field: str | None
    problem: str
    raw: str
    row_group: int | None = None

    @property
    def source(self) -> str:
        """Where the row came from, in the format of the examples table's ``source`` column."""
        return row_source(self.file, self.line, self.row_group)

    @property
    def message(self) -> str:
        what = f"field '{self.field}' {self.problem}" if self.field else self.problem
        where = f"line {self.line}" if self.row_group is None else f"row group {self.row_group} row {self.line}"
        return f"{self.file} {where}: {what}"

    def __str__(self) -> str:
        return self.message


def row_source(file: str, line: int, row_group: int | None = None) -> str:
    """``<file>:<line>``, or ``<file>:rg<row group>:<row>`` for a Parquet row (both 1-based)."""
    return f"{file}:{line}" if row_group is None else f"{file}:rg{row_group}:{line}"


@dataclasses.dataclass
class LoadResult:
    """Records in ExamplesSchema columns (``messages`` and ``metadata`` as JSON text), bad rows, and
    the files (or Parquet row groups) that could not be read at all.

    Every input row ends up in exactly one of ``records`` and ``errors``; an unreadable file counts
    as one row of ``file_errors``, so ``rows_in == len(records) + len(errors) + len(file_errors)``.
    """

    records: list[dict[str, str]] = dataclasses.field(default_factory=list)
    errors: list[LoadError] = dataclasses.field(default_factory=list)
    file_errors: list[FileError] = dataclasses.field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.records) + len(self.errors) + len(self.file_errors)

    def extend(self, other: LoadResult) -> None:
        self.records.extend(other.records)
        self.errors.extend(other.errors)
        self.file_errors.extend(other.file_errors)

    def quarantine_records(self) -> Iterator[tuple[dict[str, Any], str, str]]:
        """``(record, source, reason)`` for every bad row and unreadable file, as quarantine rows take them."""
        for error in self.errors:
            yield {"raw": error.raw, "field": error.field}, error.source, error.message
        for error in self.file_errors:
            yield {"file": error.file, "problem": error.problem}, error.source, error.message

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

    ``line`` is where it starts (1-based; in Parquet the row within ``row_group``), ``index`` its
    1-based position among the file's rows, ``value`` the parsed object (None when ``problem`` says
    why it could not be parsed).
    """

    line: int
    index: int
    raw: str
    value: Any
    problem: str | None = None
    row_group: int | None = None


class Example(NamedTuple):
    """A normalized example, before it is given its dataset, split and source."""

    example_id: str
    input: str
    target: str
    messages: list[dict[str, str]]
    metadata: dict[str, Any]


Normalizer = Callable[[RawRow, str], Example]


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udxxx`` escapes, so it can go into a message and a table."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(text) else text


def one_line(error: BaseException) -> str:
    """An exception's message on one line (pyarrow's span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def value_problem(value: Any) -> str | None:
    """Why a parsed row cannot be stored, or None: nested deeper than MAX_NESTING, or a lone surrogate
    in any string or key. Walks the value with its own stack, so no depth can exhaust Python's."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        where = f"field '{path}'" if path else "the row"
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return f"{where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text"
            continue
        if isinstance(node, Mapping):
            children = node.items()
        elif isinstance(node, list | tuple):
            children = enumerate(node)
        else:
            continue
        if depth >= MAX_NESTING:
            return f"{where} is nested more than {MAX_NESTING} levels deep"
        for key, child in children:
            if isinstance(key, str) and _SURROGATE.search(key):
                return f"{where} has a key with a lone surrogate ({printable(key)!r}), which is not text"
            if depth >= 3:  # deeper paths name where a value starts, not all the way down
                stack.append((child, depth + 1, path))
            elif isinstance(key, int):
                stack.append((child, depth + 1, f"{path}[{key}]" if path else f"[{key}]"))
            else:
                stack.append((child, depth + 1, f"{path}.{key}" if path else str(key)))
    return None


def raw_json(value: Any) -> str:
    """A parsed row as JSON text for quarantine (bytes as base64, lone surrogates escaped)."""
    try:
        return printable(json.dumps(value, ensure_ascii=False, default=json_default))
    except RecursionError:
        return f"({type(value).__name__} nested too deep to write out)"
    except (TypeError, ValueError) as exc:
        return f"({type(value).__name__} that cannot be written as JSON: {exc})"


def json_default(value: Any) -> Any:
    """JSON for what ``json`` cannot write: bytes as ``{"$base64": ...}``, anything else as its text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {BINARY_MARKER: base64.b64encode(bytes(value)).decode("ascii")}
    return str(value)


def binary_text(value: bytes, field: str) -> str:
    """A binary value of a text field as text: it must be valid UTF-8."""
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise RecordProblem(field, f"is binary data ({len(value)} bytes) that is not UTF-8 text; store it as a "
                                   "string column, or leave it unmapped to keep it in metadata as base64") from None


def read_file_bytes(path: Path, label: str) -> bytes:
    """The file's bytes, gunzipped for ``*.gz``; a FileReadError naming the file if that fails."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise FileReadError(label, f"{path} is a folder, not a data file") from None
    except OSError as exc:
        raise FileReadError(label, f"{path}: {exc.strerror or exc}") from exc
    if not path.name.lower().endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileReadError(label, f"not a complete gzip file (truncated or corrupt: {exc})") from exc


def parse_json_text(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` for JSON text whose value can be stored, else ``(None, problem)``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, f"invalid JSON: nested too deep to parse (rows may nest at most {MAX_NESTING} levels)"
    except ValueError as exc:  # e.g. an integer longer than Python's int conversion limit
        return None, f"invalid JSON ({exc})"
    return value, value_problem(value)


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
            yield RawRow(number, index, line.decode("utf-8", "backslashreplace"), None,
                         f"is not valid UTF-8 ({exc.reason} at byte {exc.start + 1})")
            continue
        value, problem = parse_json_text(text)
        if problem is None and not isinstance(value, dict):
            problem = f"expected a JSON object, got {type(value).__name__}"
        yield RawRow(number, index, text, None if problem else value, problem)


def iter_json_file(path: Path, label: str) -> Iterator[RawRow]:
    """A ``.json`` file: either one JSON array of objects (rows numbered 1..n) or JSON Lines."""
    data = read_file_bytes(path, label)
    if not data.lstrip().startswith(b"["):
        yield from iter_json_lines(path, label)
        return
    try:
        items = json.loads(data)
    except RecursionError:
        raise FileReadError(label, f"not a readable JSON array (nested more than {MAX_NESTING} levels deep)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileReadError(label, f"not a valid JSON array ({exc})") from exc
    for index, item in enumerate(items, start=1):
        problem = value_problem(item)
        if problem is None and not isinstance(item, dict):
            problem = f"expected a JSON object, got {type(item).__name__}"
        yield RawRow(index, index, raw_json(item), None if problem else item, problem)


def iter_csv_rows(path: Path, label: str, *, header: bool) -> Iterator[RawRow]:
    """CSV rows as lists of strings, or as dicts keyed by the header row when ``header`` is true.

    Quoted fields may span lines; each row's ``line`` is the line it starts on and ``raw`` its text.
    Lines are decoded one by one, so a line that is not UTF-8 makes only its row a problem.
    """
    data = read_file_bytes(path, label)
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    pending: list[str] = []
    undecodable: list[tuple[int, str]] = []  # (line, why) of the pending lines that are not UTF-8

    def lines() -> Iterator[str]:
        for number, chunk in enumerate(data.splitlines(keepends=True), start=1):
            try:
                line = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = chunk.decode("utf-8", "backslashreplace")
                undecodable.append((number, f"{exc.reason} at byte {exc.start + 1}"))
            pending.append(line)
            yield line

    # strict: a stray quote is a bad row, and a quote left open runs to the end as one bad row
    reader = csv.reader(lines(), strict=True)
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
        if undecodable:
            problem = "; ".join(("is" if number == start else f"its line {number} is") + f" not valid UTF-8 ({why})"
                                for number, why in undecodable)
        next_line += len(pending)
        pending.clear()
        undecodable.clear()
        if row == []:
            continue
        if header and columns is None:
            if problem is not None:
                raise FileReadError(label, f"the header row (line {start}) cannot be read: {problem}")
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


def iter_parquet_rows(path: Path, label: str) -> Iterator[RawRow | FileError]:
    """Parquet rows as dicts, read one row group at a time: a row group that cannot be read is one
    FileError naming it, and the other groups still load. Rows are numbered (row group, row), both 1-based."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except IsADirectoryError:
        raise FileReadError(label, f"{path} is a folder, not a data file") from None
    except Exception as exc:  # pyarrow raises OSError or ArrowInvalid, depending on what is wrong
        raise FileReadError(label, f"not a readable Parquet file ({one_line(exc)})") from exc
    with parquet:
        index = 0
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            try:
                table = parquet.read_row_group(group)
            except Exception as exc:  # a corrupt page, a bad compression block
                index += size
                yield FileError(label, f"cannot be read, so its {size} rows are not loaded ({one_line(exc)})",
                                row_group=group + 1)
                continue
            for number, (row, raw, problem) in enumerate(_python_rows(table), start=1):
                index += 1
                problem = problem or value_problem(row)
                yield RawRow(number, index, raw, None if problem else row, problem, group + 1)


def _python_rows(table) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """``(row, raw text, problem)`` for each row of a pyarrow table; a row with a value Python cannot
    hold (a timestamp past year 9999) has no dict, Arrow's text of it, and the problem."""
    try:
        rows = table.to_pylist()
    except (ValueError, OverflowError, ArithmeticError):
        rows = None  # converted again row by row below, to find the rows at fault
    if rows is not None:
        yield from ((row, raw_json(row), None) for row in rows)
        return
    for number in range(table.num_rows):
        part = table.slice(number, 1)
        try:
            row = part.to_pylist()[0]
        except (ValueError, OverflowError, ArithmeticError) as exc:
            yield None, part.to_string(preview_cols=part.num_columns), \
                f"has a value Python cannot hold ({type(exc).__name__}: {one_line(exc)})"
        else:
            yield row, raw_json(row), None


# The data files a loader reads, by suffix (lower case).
DATA_FILE_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json", ".csv", ".parquet")


def iter_file_rows(path: Path, label: str) -> Iterator[RawRow | FileError]:
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
    raise FileReadError(label, "unknown file type (expected .jsonl, .json, .csv or .parquet)")


def read_rows(path: Path, label: str,
              reader: Callable[[Path, str], Iterable[RawRow | FileError]] = iter_file_rows,
              ) -> Iterator[RawRow | FileError]:
    """``reader``'s rows of one file, where a file that cannot be read at all becomes one FileError."""
    try:
        yield from reader(path, label)
    except FileReadError as exc:
        yield FileError(label, exc.problem)
    except OSError as exc:  # a dangling link, a folder, no permission: the file cannot be opened
        yield FileError(label, f"cannot be read ({exc.strerror or exc})")


def raise_if_nothing_read(dataset: str, result: LoadResult) -> None:
    """Raise when files failed and not one row came out: loading nothing must not look like an empty dataset."""
    if result.file_errors and not result.records and not result.errors:
        raise DatasetReadError(f"{dataset}: no data could be read: "
                               + "; ".join(error.message for error in result.file_errors), result.file_errors)


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
        if path.is_dir():  # its files are found on their own; a dangling link is kept, to be reported
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
    if isinstance(value, bytes):
        value = binary_text(value, field)
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
            messages = json.dumps(example.messages, ensure_ascii=False)
            metadata = json.dumps(example.metadata, ensure_ascii=False, default=json_default)
        except RecordProblem as problem:
            self._reject(row, file_label, problem.field, problem.problem)
            return
        except Exception as exc:  # a value no normalizer foresaw costs its own row, never the whole load
            self._reject(row, file_label, None, f"cannot be loaded ({type(exc).__name__}: {printable(str(exc))})")
            return
        source = row_source(file_label, row.line, row.row_group)
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
            "messages": messages,
            "metadata": metadata,
            "source": source,
        })
        self.count += 1

    def add_rows(self, rows: Iterable[RawRow | FileError], file_label: str, normalize: Normalizer) -> None:
        for row in rows:
            if self.full:
                return
            if isinstance(row, FileError):
                self.result.file_errors.append(row)
            else:
                self.add(row, file_label, normalize)

    def _reject(self, row: RawRow, file_label: str, field: str | None, problem: str) -> None:
        self.result.errors.append(LoadError(file_label, row.line, field, problem, row.raw, row.row_group))


def load_split_files(dataset: str, root: Path, files: Mapping[str, list[Path]], splits: Iterable[str] | None,
                     limit: int | None, normalize: Normalizer) -> LoadResult:
    """Load each chosen split's files with ``normalize``; file labels are ``<dataset>/<path in root>``.

    A file that cannot be read is a FileError on the result while the others load; DatasetReadError
    only when files failed and nothing at all could be read.
    """
    result = LoadResult()
    for split in choose_splits(dataset, root, files, splits):
        collector = SplitCollector(result, dataset, split, limit)
        for path in files[split]:
            if collector.full:
                break
            label = f"{dataset}/{path.relative_to(root).as_posix()}"
            collector.add_rows(read_rows(path, label), label, normalize)
    raise_if_nothing_read(dataset, result)
    return result
