"""Delta Lake reads and writes for every table: one place for write modes, retries and predicates.

Writes are idempotent by construction: a partition is replaced by predicate, keyed rows are
merged, and nothing is blindly appended, so re-running any step never duplicates or loses rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa

from schemas.spec import TableSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int
    rows_written: int


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        raise TypeError("timestamp partition values are not supported: partition by a date or string column")
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def equality_predicate(values: dict[str, Any]) -> str:
    """``col = 'v' AND ...``; a list value becomes ``col IN (...)``."""
    parts = []
    for column, value in values.items():
        if isinstance(value, list | tuple | set):
            items = ", ".join(_sql_literal(v) for v in sorted(value))
            parts.append(f"{column} IN ({items})")
        else:
            parts.append(f"{column} = {_sql_literal(value)}")
    return " AND ".join(parts)


class DeltaLake:
    """The lakehouse: Delta tables under ``root`` (a local folder or an object-store URI)."""

    def __init__(self, root: str | Path, storage_options: dict[str, str] | None = None,
                 max_commit_retries: int = 5) -> None:
        self.root = str(root).rstrip("/")
        self.storage_options = dict(storage_options or {}) or None
        self.max_commit_retries = max_commit_retries
        if "://" not in self.root:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def uri(self, spec: TableSpec) -> str:
        return f"{self.root}/{spec.path}"

    # -- table lifecycle ---------------------------------------------------------------------

    def exists(self, spec: TableSpec) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.uri(spec), storage_options=self.storage_options)

    def ensure(self, spec: TableSpec):
        """Create the table from its schema, or check that the existing one still matches it."""
        from deltalake import DeltaTable

        expected = spec.arrow_schema()
        if self.exists(spec):
            table = DeltaTable(self.uri(spec), storage_options=self.storage_options)
            actual = pa.schema(table.schema().to_arrow())
            missing = [f.name for f in expected if f.name not in actual.names]
            if missing:
                raise ValueError(f"table {spec.path}: stored schema lacks columns {missing}; "
                                 f"stored columns are {actual.names}")
            return table
        return DeltaTable.create(
            self.uri(spec), expected, mode="ignore",
            partition_by=[spec.partition_by] if spec.partition_by else None,
            storage_options=self.storage_options, name=spec.name,
        )

    def _table(self, spec: TableSpec, version: int | None = None):
        from deltalake import DeltaTable

        return DeltaTable(self.uri(spec), version=version, storage_options=self.storage_options)

    def version(self, spec: TableSpec) -> int:
        return self._table(spec).version() if self.exists(spec) else -1

    # -- writes ------------------------------------------------------------------------------

    def _to_arrow(self, spec: TableSpec, frame: pd.DataFrame) -> pa.Table:
        validated = spec.model.validate(frame[spec.columns] if set(spec.columns) <= set(frame.columns) else frame)
        return pa.Table.from_pandas(validated, schema=spec.arrow_schema(), preserve_index=False)

    def _with_retries(self, action: Callable[[], T], what: str) -> T:
        from deltalake.exceptions import CommitFailedError

        for attempt in range(self.max_commit_retries + 1):
            try:
                return action()
            except CommitFailedError as error:
                if attempt == self.max_commit_retries:
                    raise
                wait = 0.05 * 2**attempt + random.random() * 0.05
                log.warning("%s: concurrent commit (%s); retrying in %.2fs", what, error, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def replace_where(self, spec: TableSpec, frame: pd.DataFrame, where: dict[str, Any]) -> WriteResult:
        """Replace exactly the rows matching ``where`` (a partition, a run) with ``frame``.

        Every row of ``frame`` must itself match ``where``: the write is then idempotent, and rows
        outside ``where`` are never touched.
        """
        from deltalake import write_deltalake

        self.ensure(spec)
        for column, value in where.items():
            allowed = set(value) if isinstance(value, list | tuple | set) else {value}
            outside = frame.loc[~frame[column].isin(allowed)] if len(frame) else frame.iloc[0:0]
            if len(outside):
                raise ValueError(f"table {spec.path}: {len(outside)} rows have {column} outside {sorted(map(str, allowed))}")
        data = self._to_arrow(spec, frame)
        predicate = equality_predicate(where)

        def write() -> None:
            write_deltalake(self.uri(spec), data, mode="overwrite", predicate=predicate,
                            storage_options=self.storage_options)

        self._with_retries(write, f"replace {spec.path} where {predicate}")
        return WriteResult(spec.path, self.version(spec), data.num_rows)

    def upsert(self, spec: TableSpec, frame: pd.DataFrame) -> WriteResult:
        """Merge ``frame`` on the table's key: update matching rows, insert new ones."""
        self.ensure(spec)
        duplicated = frame.duplicated(list(spec.keys), keep=False)
        if duplicated.any():
            sample = frame.loc[duplicated, list(spec.keys)].head(3).to_dict("records")
            raise ValueError(f"table {spec.path}: duplicate keys in the rows to merge, e.g. {sample}")
        data = self._to_arrow(spec, frame)
        if data.num_rows == 0:
            return WriteResult(spec.path, self.version(spec), 0)
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)

        def merge() -> None:
            (self._table(spec).merge(data, predicate, source_alias="s", target_alias="t")
             .when_matched_update_all().when_not_matched_insert_all().execute())

        self._with_retries(merge, f"merge into {spec.path}")
        return WriteResult(spec.path, self.version(spec), data.num_rows)

    # -- reads -------------------------------------------------------------------------------

    def read(self, spec: TableSpec, where: dict[str, Any] | None = None, version: int | None = None,
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of the table (optionally at an earlier ``version``: time travel), filtered by equality."""
        if not self.exists(spec):
            if version is not None:
                raise FileNotFoundError(f"table {spec.path} does not exist, so version {version} cannot be read")
            empty = spec.arrow_schema().empty_table().to_pandas()
            return empty[list(columns)] if columns else empty
        filters = None
        if where:
            filters = []
            for column, value in where.items():
                if isinstance(value, list | tuple | set):
                    filters.append((column, "in", list(value)))
                else:
                    filters.append((column, "=", value))
        table = self._table(spec, version).to_pyarrow_table(columns=list(columns) if columns else None,
                                                           filters=filters)
        return table.to_pandas()
