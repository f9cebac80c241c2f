"""Any dataset in JSONL, JSON, CSV or Parquet, or anything Hugging Face ``datasets`` can load,
turned into examples through a mapping of its field names."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from crucible.data.loaders.base import (
    DatasetReadError,
    Example,
    FileError,
    LoadError,
    LoadResult,
    RawRow,
    RecordProblem,
    SplitCollector,
    binary_text,
    chat,
    json_default,
    parse_messages,
    raise_if_nothing_read,
    raw_json,
    read_rows,
    value_problem,
)


class HubUnreachableError(DatasetReadError):
    """A Hugging Face hub dataset was asked for and the hub cannot be reached (offline, no network)."""


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    """Which source fields hold an example's parts; every unmapped field is kept in ``metadata``.

    ``id`` None numbers rows ``<split>-<row>``; ``split`` None takes the split from the caller (or
    the Hugging Face split); ``messages`` None makes the chat a user ``input`` and an assistant ``target``.
    """

    input: str
    target: str
    id: str | None = None
    split: str | None = None
    messages: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name in (self.input, self.target, self.id, self.split, self.messages) if name)


def _text(row: Mapping[str, Any], field: str) -> str:
    """A scalar field as text: numbers become their decimal text, UTF-8 bytes their text, missing and
    NaN are a problem; lists and objects become their JSON text."""
    if field not in row:
        raise RecordProblem(field, "is missing")
    value = row[field]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RecordProblem(field, "is empty")
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return binary_text(value, field)
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=json_default)


def _normalizer(mapping: FieldMapping):
    def normalize(row: RawRow, split: str) -> Example:
        fields = row.value
        text = _text(fields, mapping.input)
        if not text.strip():
            raise RecordProblem(mapping.input, "is empty")
        target = _text(fields, mapping.target)
        example_id = _text(fields, mapping.id) if mapping.id else f"{split}-{row.index:06d}"
        if not example_id.strip():
            raise RecordProblem(mapping.id, "is empty")
        if mapping.messages:
            messages = parse_messages(fields.get(mapping.messages), mapping.messages)
        else:
            messages = chat(text, target) if target else [{"role": "user", "content": text}]
        metadata = {name: value for name, value in fields.items() if name not in mapping.fields}
        return Example(example_id, text, target, messages, metadata)

    return normalize


def _collect(rows: Iterable[RawRow | FileError], label: str, mapping: FieldMapping, dataset: str, split: str,
             limit: int | None, result: LoadResult) -> None:
    """Add rows to ``result``, each to the split named by its ``mapping.split`` field when there is one."""
    collectors: dict[str, SplitCollector] = {}
    normalize = _normalizer(mapping)
    for row in rows:
        if isinstance(row, FileError):
            result.file_errors.append(row)
            continue
        row_split = split
        if mapping.split and row.problem is None:
            try:
                row_split = _text(row.value, mapping.split)
                if not row_split.strip():
                    raise RecordProblem(mapping.split, "is empty")
            except RecordProblem as problem:
                result.errors.append(LoadError(label, row.line, problem.field,
                                               f"{problem.problem} (it names the split)", row.raw, row.row_group))
                continue
        collector = collectors.setdefault(row_split, SplitCollector(result, dataset, row_split, limit))
        if not collector.full:
            collector.add(row, label, normalize)


def load_file(path: str | Path, mapping: FieldMapping, *, dataset: str, split: str = "train",
              limit: int | None = None, label: str | None = None) -> LoadResult:
    """Load a ``.jsonl[.gz]``, ``.json``, ``.csv`` (with a header row) or ``.parquet`` file.

    ``split`` names the split unless ``mapping.split`` names a field that holds it; ``limit`` caps
    each split's records. Sources read ``<file name>:<line>`` (``<file name>:rg<group>:<row>`` for Parquet).
    Bytes in a mapped text field must be UTF-8; unmapped bytes are kept in metadata as ``{"$base64": ...}``.

    A row that cannot be loaded is a LoadError; an unreadable Parquet row group a FileError while the
    other groups load; a file that cannot be read at all raises DatasetReadError (its ``file_errors``
    holds the one FileError). ``label`` replaces the file name in sources (a remote copy's origin).
    """
    path = Path(path)
    label = label or path.name
    result = LoadResult()
    _collect(read_rows(path, label), label, mapping, dataset, split, limit, result)
    raise_if_nothing_read(dataset, result)
    return result


def _is_saved_dataset(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and any((folder / name).is_file() for name in ("dataset_dict.json", "state.json"))


def _open_hf_dataset(path: str, name: str | None, split: str | None, load_kwargs: dict[str, Any]):
    import datasets

    try:
        if _is_saved_dataset(path):
            loaded = datasets.load_from_disk(path)
            return loaded[split] if split and isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(path, name, split=split, **load_kwargs)
    except ConnectionError as exc:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else ""
        raise HubUnreachableError(
            f"cannot load {path!r}: the Hugging Face hub is unreachable{offline}: {exc}. Download the dataset "
            "where there is network and pass a local path instead: a folder written by save_to_disk, or "
            "data files via load_hf_dataset('json' | 'csv' | 'parquet', mapping, data_files=...)") from exc
    except FileNotFoundError as exc:
        raise DatasetReadError(f"cannot load {path!r}: {exc}") from exc


def load_hf_dataset(path: str | Path, mapping: FieldMapping, *, dataset: str, name: str | None = None,
                    split: str | None = None, limit: int | None = None, **load_kwargs: Any) -> LoadResult:
    """Load anything ``datasets.load_dataset(path, name, split=split, **load_kwargs)`` can, or a folder
    written by ``save_to_disk``; every split unless ``split`` picks one.

    Raises HubUnreachableError (suggesting a local path) when ``path`` is a hub id and the hub
    cannot be reached. Sources read ``<path name>/<split>:<row>``.
    """
    import datasets

    loaded = _open_hf_dataset(str(path), name, split, load_kwargs)
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(split or str(loaded.split or "train"), loaded)]
    result = LoadResult()
    for split_name, table in parts:
        label = f"{Path(str(path)).name or path}/{split_name}"
        rows = (RawRow(index, index, raw_json(row), None if problem else row, problem)
                for index, row in enumerate(table, start=1) for problem in [value_problem(row)])
        _collect(rows, label, mapping, dataset, split_name, limit, result)
    return result
