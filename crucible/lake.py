"""Delta Lake reads and writes for every table: one place for write modes, retries, table health and
schema versions.

Writes are idempotent by construction: a slice is replaced by predicate, keyed rows are merged, and
only append-only tables (an audit log) are appended to, so re-running a step never duplicates or
loses rows. A table that existed and can no longer be read is an error that names it
(:class:`LakeTableError`), never an empty read, and nothing is written over it.

How damage is detected, and its limits:

- any Delta error while opening or reading a table is re-raised naming the table;
- local folders: a table folder that holds data files but no readable ``_delta_log``; a table whose
  marker ``<root>/_crucible/tables/<group>.<name>`` (written when the table is created, one file
  per table so concurrent creators never race) says it existed but whose folder or log is gone;
  a commit file after the last checkpoint that is empty or not line-by-line JSON (delta-rs itself
  reads a truncated newest commit as a shorter table and silently drops its rows);
- object-store URIs (s3://, gs://, az://): only the Delta errors are caught. deltalake gives no
  listing or file writes there, so a table whose whole log was deleted reads as not created yet,
  and commit files are not checked line by line. Deleting the whole lake root also deletes the
  markers, so that case reads as an empty lake everywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd
import pyarrow as pa

from schemas.spec import TableSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION_PROPERTY = "crucible.schema_version"
MARKERS_FOLDER = "_crucible/tables"
MOVED_COMMITS_PREFIX = "_crucible_unreadable_commits_"
_RECOVERY_HINT = "run `crucible lake check`; restore with `crucible lake restore {table} --version N`"


def default_home() -> str:
    """``$CRUCIBLE_HOME``, else ``.crucible`` under the working directory."""
    return str(Path(os.environ.get("CRUCIBLE_HOME", ".crucible")).resolve())


def default_lake_root() -> str:
    """``$CRUCIBLE_LAKE_ROOT``, else ``$CRUCIBLE_HOME/lake``: the one default for the CLI and resources."""
    return os.environ.get("CRUCIBLE_LAKE_ROOT") or f"{default_home()}/lake"


class LakeTableError(RuntimeError):
    """A table that existed is unreadable or lost its log; reads and writes refuse it."""

    def __init__(self, table: str, uri: str, problem: str) -> None:
        self.table, self.uri, self.problem = table, uri, problem
        super().__init__(f"table {table} ({uri}): {problem}; {_RECOVERY_HINT.format(table=table)}")


class TableVersionError(LookupError):
    """A version of a table that does not exist (or no longer can be read)."""


class MigrationRequiredError(RuntimeError):
    """The stored schema version of a table is behind the code's and a non-additive step is pending."""


class CommitContentionError(RuntimeError):
    """Concurrent commits kept conflicting with a write until its deadline passed."""


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int
    rows_written: int
    retries: int = 0


@dataclass(frozen=True)
class TableHealth:
    """What ``crucible lake check`` reports for one table."""

    table: str
    uri: str
    status: Literal["ok", "not created", "broken"]
    problem: str | None = None
    version: int | None = None
    rows: int | None = None
    schema_version: int | None = None
    expected_schema_version: int | None = None
    pending_migrations: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreResult:
    table: str
    restored_to: int
    version: int
    moved_aside: tuple[str, ...] = ()
    moved_to: str | None = None


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


def _log_version(name: str) -> int | None:
    """The version a ``_delta_log`` file belongs to (``00..03.json``, ``00..03.checkpoint.parquet``)."""
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def stored_schema_version(table: Any) -> int:
    """The ``crucible.schema_version`` property of a loaded DeltaTable; tables from before it are v1."""
    return int(table.metadata().configuration.get(SCHEMA_VERSION_PROPERTY) or 1)


@dataclass
class DeltaLake:
    """The lakehouse: Delta tables under ``root`` (a local folder or an object-store URI).

    Contended commits are retried with exponential backoff and full jitter (a random wait between 0
    and ``min(backoff_cap_s, backoff_base_s * 2**attempt)``) until ``commit_deadline_s`` has passed.
    """

    root: str | Path
    storage_options: dict[str, str] | None = None
    commit_deadline_s: float = 120.0
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    _migrating: set[str] = field(default_factory=set, init=False, repr=False)
    _checked_commits: dict[str, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = str(self.root).rstrip("/")
        self.storage_options = dict(self.storage_options or {}) or None
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    @property
    def local(self) -> bool:
        return "://" not in str(self.root) or str(self.root).startswith("file://")

    def uri(self, spec: TableSpec | str) -> str:
        return f"{self.root}/{_path(spec)}"

    def _folder(self, table: str) -> Path:
        return Path(str(self.root).removeprefix("file://"), table)

    def _marker(self, table: str) -> Path:
        return Path(str(self.root).removeprefix("file://"), MARKERS_FOLDER, table.replace("/", ".", 1))

    # -- opening and health ------------------------------------------------------------------

    def _open(self, table: str, version: int | None = None) -> Any | None:
        """The DeltaTable at ``table`` (at ``version``), None when it was never created, else raise."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        uri = self.uri(table)
        if self.local:
            self._check_commit_files(table, uri)
        try:
            loaded = DeltaTable(uri, storage_options=self.storage_options)
        except TableNotFoundError:
            problem = self._missing_log_problem(table)
            if problem:
                raise LakeTableError(table, uri, problem) from None
            if version is not None:
                raise TableVersionError(f"table {table} does not exist yet, so version {version} cannot be "
                                        f"read") from None
            return None
        except DeltaError as error:
            raise LakeTableError(table, uri, f"its Delta log cannot be read ({_first_line(error)})") from error
        if version is None or version == loaded.version():
            return loaded
        latest = loaded.version()
        earliest = self._earliest_version(table)
        if not earliest <= version <= latest:
            raise TableVersionError(f"table {table} has versions {earliest}..{latest}; version {version} does "
                                    f"not exist")
        try:
            loaded.load_as_version(version)
        except DeltaError as error:
            raise TableVersionError(f"table {table}: version {version} cannot be read any more "
                                    f"({_first_line(error)}); readable versions end at {latest}") from error
        return loaded

    def _missing_log_problem(self, table: str) -> str | None:
        """Why a table with no readable log is damaged rather than not created yet (local roots only)."""
        if not self.local:
            return None
        folder = self._folder(table)
        if folder.is_dir():
            data = [p.name for p in folder.iterdir() if not p.name.startswith(("_", "."))]
            if data:
                return (f"its folder holds data ({', '.join(sorted(data)[:3])}{', ...' if len(data) > 3 else ''}) "
                        f"but no Delta log (_delta_log is missing or empty)")
        if self._marker(table).exists():
            where = "its Delta log is gone" if folder.is_dir() else "its folder is gone"
            return (f"it was created in this lake (marker {self._marker(table)}) but {where}; if no backup "
                    f"exists, see README 'Recovering a damaged lake'")
        return None

    def _check_commit_files(self, table: str, uri: str) -> None:
        """Every commit after the last checkpoint is non-empty JSON, one action per line.

        delta-rs reads a truncated or empty newest commit as a shorter table, silently dropping the
        rows that commit added, so the files delta-rs would replay are checked here (once per size
        and modification time).
        """
        log_dir = self._folder(table) / "_delta_log"
        if not log_dir.is_dir():
            return
        checkpoint = self._last_checkpoint_version(log_dir)
        for path in sorted(log_dir.glob("*.json")):
            version = _log_version(path.name)
            if version is None or (checkpoint is not None and version <= checkpoint):
                continue
            stat = path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self._checked_commits.get(str(path)) == stamp:
                continue
            problem = _commit_problem(path)
            if problem:
                raise LakeTableError(table, uri, f"commit {path.name} is corrupted ({problem})")
            self._checked_commits[str(path)] = stamp

    @staticmethod
    def _last_checkpoint_version(log_dir: Path) -> int | None:
        pointer = log_dir / "_last_checkpoint"
        try:
            return int(json.loads(pointer.read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _earliest_version(self, table: str) -> int:
        if not self.local:
            return 0
        versions = [_log_version(p.name) for p in (self._folder(table) / "_delta_log").iterdir()]
        return min((v for v in versions if v is not None), default=0)

    def _write_marker(self, table: str) -> None:
        if not self.local:
            return
        marker = self._marker(table)
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{table}\n")

    def exists(self, spec: TableSpec | str) -> bool:
        """Whether the table was created; raises :class:`LakeTableError` when it is damaged."""
        return self._open(_path(spec)) is not None

    def version(self, spec: TableSpec | str) -> int:
        """The newest version, -1 when the table was never created."""
        table = self._open(_path(spec))
        return table.version() if table is not None else -1

    def health(self, spec: TableSpec | str) -> TableHealth:
        """ok / not created / broken (with the reason), version, rows, schema versions, pending steps."""
        table = _path(spec)
        uri = self.uri(table)
        expected = spec.schema_version if isinstance(spec, TableSpec) else None
        try:
            loaded = self._open(table)
        except LakeTableError as error:
            return TableHealth(table, uri, "broken", error.problem, expected_schema_version=expected)
        if loaded is None:
            return TableHealth(table, uri, "not created", expected_schema_version=expected)
        self._write_marker(table)
        stored = stored_schema_version(loaded)
        pending: tuple[str, ...] = ()
        if isinstance(spec, TableSpec) and stored < spec.schema_version:
            from crucible.migrations import pending_steps

            pending = tuple(step.step_id for step in pending_steps(spec, stored))
        try:
            rows = loaded.count()
        except Exception as error:  # noqa: BLE001 - a data file that cannot be read is damage to report
            return TableHealth(table, uri, "broken", f"its data cannot be read ({_first_line(error)})",
                               loaded.version(), None, stored, expected, pending)
        return TableHealth(table, uri, "ok", None, loaded.version(), rows, stored, expected, pending)

    def tables_found(self) -> list[str]:
        """Table paths present under a local root (folders with a log or data, and markers)."""
        if not self.local:
            return []
        root = Path(str(self.root).removeprefix("file://"))
        found = set()
        for group in root.iterdir() if root.is_dir() else ():
            if not group.is_dir() or group.name.startswith("."):
                continue
            for folder in group.iterdir():
                if folder.is_dir() and f"{group.name}/{folder.name}" != MARKERS_FOLDER and any(folder.iterdir()):
                    found.add(f"{group.name}/{folder.name}")
        markers = root / MARKERS_FOLDER
        if markers.is_dir():
            found.update(marker.name.replace(".", "/", 1) for marker in markers.iterdir())
        return sorted(found)

    # -- table lifecycle and schema versions -------------------------------------------------

    def ensure(self, spec: TableSpec) -> Any:
        """Create the table from its schema, or bring the existing one up to it before a write.

        New nullable columns are added on the fly (Delta schema evolution), and so are pending
        migration steps that are additive; any other pending step refuses the write with
        :class:`MigrationRequiredError` until ``crucible lake migrate`` has run.
        """
        table = self._open(spec.path)
        if table is None:
            table = self._create(spec)
        self._write_marker(spec.path)
        if spec.path not in self._migrating:
            table = self._bring_to_schema_version(spec, table)
        return self._add_nullable_columns(spec, table)

    def _create(self, spec: TableSpec) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            return DeltaTable.create(
                self.uri(spec), spec.arrow_schema(), mode="ignore",
                partition_by=[spec.partition_by] if spec.partition_by else None,
                storage_options=self.storage_options, name=spec.name,
                configuration={SCHEMA_VERSION_PROPERTY: str(spec.schema_version)}, raise_if_key_not_exists=False,
            )
        except DeltaError:
            # Another process created it between our check and our commit: use theirs.
            table = self._open(spec.path)
            if table is None:
                raise
            return table

    def _bring_to_schema_version(self, spec: TableSpec, table: Any) -> Any:
        stored = stored_schema_version(table)
        if stored == spec.schema_version:
            return table
        if stored > spec.schema_version:
            raise MigrationRequiredError(
                f"table {spec.path} has schema version {stored}, newer than this code's {spec.schema_version}: "
                f"upgrade crucible before writing to it")
        from crucible.migrations import pending_steps, run_step

        steps = pending_steps(spec, stored)
        blocking = [step.step_id for step in steps if not step.additive]
        if blocking:
            raise MigrationRequiredError(
                f"table {spec.path} has schema version {stored}, the code expects {spec.schema_version}, and "
                f"non-additive migration steps are pending ({', '.join(blocking)}): run `crucible lake migrate`")
        for step in steps:
            run_step(self, spec, step)
        return self._open(spec.path)

    @contextlib.contextmanager
    def migrating(self, spec: TableSpec) -> Iterator[None]:
        """Writes inside this block skip the schema-version gate of ``spec``: for migration steps only."""
        self._migrating.add(spec.path)
        try:
            yield
        finally:
            self._migrating.discard(spec.path)

    def _add_nullable_columns(self, spec: TableSpec, table: Any) -> Any:
        from deltalake import Field
        from deltalake.exceptions import DeltaError

        stored = set(pa.schema(table.schema().to_arrow()).names)
        missing = [f for f in spec.arrow_schema() if f.name not in stored]
        if not missing:
            return table
        required = [f.name for f in missing if not f.nullable]
        if required:
            raise ValueError(f"table {spec.path}: stored schema lacks required columns {required}; a new "
                             f"non-nullable column needs a migration step in crucible/migrations.py and "
                             f"`crucible lake migrate`")

        def add() -> None:
            try:
                table.alter.add_columns([Field.from_arrow(f) for f in missing])
            except DeltaError:
                # A concurrent writer may have added them first; only a still-missing column is an error.
                current = set(pa.schema(self._open(spec.path).schema().to_arrow()).names)
                if any(f.name not in current for f in missing):
                    raise

        self._with_retries(add, f"add columns {[f.name for f in missing]} to {spec.path}")
        return self._open(spec.path)

    def set_schema_version(self, spec: TableSpec, version: int) -> None:
        """Record ``version`` as the table's stored schema version (a Delta table property)."""
        def set_property() -> None:
            self._open(spec.path).alter.set_table_properties({SCHEMA_VERSION_PROPERTY: str(version)},
                                                             raise_if_not_exists=False)

        self._with_retries(set_property, f"set {SCHEMA_VERSION_PROPERTY}={version} on {spec.path}")

    def stored_schema_version(self, spec: TableSpec | str) -> int | None:
        table = self._open(_path(spec))
        return stored_schema_version(table) if table is not None else None

    # -- writes ------------------------------------------------------------------------------

    def _to_arrow(self, spec: TableSpec, frame: pd.DataFrame) -> pa.Table:
        validated = spec.model.validate(frame[spec.columns] if set(spec.columns) <= set(frame.columns) else frame)
        return pa.Table.from_pandas(validated, schema=spec.arrow_schema(), preserve_index=False)

    def _with_retries(self, action: Callable[[], T], what: str) -> tuple[T, int]:
        """Run ``action``, retrying commit conflicts (deltalake's CommitFailedError) until the deadline.

        In deltalake 1.6.6 every lost race (concurrent append, delete-read, delete-delete, metadata
        change) surfaces as CommitFailedError, and version-number collisions are retried inside
        delta-rs before that; other errors are real failures and are raised at once.
        """
        from deltalake.exceptions import CommitFailedError

        deadline = time.monotonic() + self.commit_deadline_s
        attempt = 0
        while True:
            try:
                return action(), attempt
            except CommitFailedError as error:
                attempt += 1
                wait = random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(attempt, 30)))
                if time.monotonic() + wait > deadline:
                    raise CommitContentionError(
                        f"{what}: concurrent commits still conflicted after {attempt} attempts in "
                        f"{self.commit_deadline_s:.0f}s ({_first_line(error)}); raise commit_deadline_s or "
                        f"write from fewer processes at once") from error
                log.info("%s: concurrent commit (%s); retry %d in %.2fs", what, _first_line(error), attempt, wait)
                time.sleep(wait)

    def _commit(self, table: Any, operation: Callable[[Any], object], what: str) -> tuple[int, int]:
        """Run one write ``operation`` on the loaded ``table``; (the version it left, retries it took).

        Each retry first brings the table up to the newest commit, so the operation is re-planned
        against what the winning writer committed.
        """
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            if attempts:
                table.update_incremental()
            attempts += 1
            operation(table)

        _, retries = self._with_retries(attempt, what)
        table.update_incremental()
        return table.version(), retries

    def replace_where(self, spec: TableSpec, frame: pd.DataFrame, where: dict[str, Any]) -> WriteResult:
        """Replace exactly the rows matching ``where`` (a partition, a run) with ``frame``.

        Every row of ``frame`` must itself match ``where``: the write is then idempotent, and rows
        outside ``where`` are never touched. An empty ``frame`` deletes the slice.
        """
        from deltalake import write_deltalake

        table = self.ensure(spec)
        for column, value in where.items():
            allowed = set(value) if isinstance(value, list | tuple | set) else {value}
            outside = frame.loc[~frame[column].isin(allowed)] if len(frame) else frame.iloc[0:0]
            if len(outside):
                raise ValueError(f"table {spec.path}: {len(outside)} rows have {column} outside {sorted(map(str, allowed))}")
        data = self._to_arrow(spec, frame)
        predicate = equality_predicate(where)

        version, retries = self._commit(
            table, lambda t: write_deltalake(t, data, mode="overwrite", predicate=predicate),
            f"replace {spec.path} where {predicate}")
        return WriteResult(spec.path, version, data.num_rows, retries)

    def upsert(self, spec: TableSpec, frame: pd.DataFrame) -> WriteResult:
        """Merge ``frame`` on the table's key: update matching rows, insert new ones."""
        table = self.ensure(spec)
        duplicated = frame.duplicated(list(spec.keys), keep=False)
        if duplicated.any():
            sample = frame.loc[duplicated, list(spec.keys)].head(3).to_dict("records")
            raise ValueError(f"table {spec.path}: duplicate keys in the rows to merge, e.g. {sample}")
        data = self._to_arrow(spec, frame)
        if data.num_rows == 0:
            return WriteResult(spec.path, table.version(), 0)
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
        version, retries = self._commit(
            table, lambda t: (t.merge(data, predicate, source_alias="s", target_alias="t")
                              .when_matched_update_all().when_not_matched_insert_all().execute()),
            f"merge into {spec.path}")
        return WriteResult(spec.path, version, data.num_rows, retries)

    def insert_new(self, spec: TableSpec, data: pa.Table) -> WriteResult:
        """Insert the rows of ``data`` whose key is not stored yet; stored rows are never changed.

        The bulk path of ingestion: ``data`` must already be valid and in ``spec.arrow_schema()``, since its
        caller validated it column-wise (a Pandera pass over a million rows costs ten times the write).
        The partition column joins the match, so only the partitions the rows fall in are read; a key is
        thus unique within its partition. ``rows_written`` counts the rows inserted. The merge fails on a
        concurrent commit and is re-planned, so two writers inserting the same key insert it once.
        """
        expected = spec.arrow_schema()
        if not data.schema.equals(expected):
            raise ValueError(f"table {spec.path}: insert_new needs rows in the table's Arrow schema {expected}, "
                             f"got {data.schema}")
        table = self.ensure(spec)
        if data.num_rows == 0:
            return WriteResult(spec.path, table.version(), 0)
        from deltalake import write_deltalake

        match = list(dict.fromkeys([*spec.keys, *([spec.partition_by] if spec.partition_by else [])]))
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in match)
        partitions = sorted(data.column(spec.partition_by).unique().to_pylist()) if spec.partition_by else []
        inserted = 0

        def insert(loaded: Any) -> None:
            nonlocal inserted
            if partitions and not loaded.file_uris(partition_filters=[(spec.partition_by, "in", [
                    v.isoformat() if isinstance(v, dt.date) else str(v) for v in partitions])]):
                # Nothing stored in these partitions: write the rows as they are (a merge costs about as
                # much again). The predicate makes the commit conflict with a concurrent write to them,
                # and the retry then re-plans, as a merge.
                write_deltalake(loaded, data, mode="overwrite",
                                predicate=equality_predicate({spec.partition_by: partitions}))
                inserted = data.num_rows
                return
            metrics = (loaded.merge(data, predicate, source_alias="s", target_alias="t")
                       .when_not_matched_insert_all().execute())
            inserted = int(metrics.get("num_target_rows_inserted", 0))

        version, retries = self._commit(table, insert, f"insert new rows into {spec.path}")
        return WriteResult(spec.path, version, inserted, retries)

    def read_modify_write(self, spec: TableSpec, where: dict[str, Any] | None,
                          change: Callable[[pd.DataFrame], pd.DataFrame]) -> WriteResult:
        """Merge ``change(rows)`` on the key, ``rows`` being the rows matching ``where`` at the snapshot the
        merge commits against: a decision made on what is stored (the next number, a state change).

        A conflicting commit reloads the table and calls ``change`` again with the new rows, so the
        decision is never applied to rows it did not see (``upsert`` retries its rows as they were).
        deltalake 1.6.6 fails a merge on any concurrent commit that added or removed data, which makes
        each attempt serializable. ``change`` may raise to abort; an empty frame writes nothing.
        """
        table = self.ensure(spec)
        filters = [(c, "in", list(v)) if isinstance(v, list | tuple | set) else (c, "=", v)
                   for c, v in (where or {}).items()] or None
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
        written = 0

        def attempt(loaded: Any) -> None:
            nonlocal written
            rows = _filtered_read(loaded, None, where, filters)
            frame = change(rows)
            written = len(frame)
            if not written:
                return
            duplicated = frame.duplicated(list(spec.keys), keep=False)
            if duplicated.any():
                sample = frame.loc[duplicated, list(spec.keys)].head(3).to_dict("records")
                raise ValueError(f"table {spec.path}: duplicate keys in the rows to merge, e.g. {sample}")
            (loaded.merge(self._to_arrow(spec, frame), predicate, source_alias="s", target_alias="t")
             .when_matched_update_all().when_not_matched_insert_all().execute())

        version, retries = self._commit(table, attempt, f"read-modify-write {spec.path}")
        return WriteResult(spec.path, version, written, retries)

    def append(self, spec: TableSpec, frame: pd.DataFrame) -> WriteResult:
        """Append ``frame`` to an append-only table (an audit log): every call adds its rows once.

        Only for tables whose rows are never rewritten; a failed commit is retried, a successful one
        never is, so a row is not appended twice by the lake (a caller re-running a step would).
        """
        from deltalake import write_deltalake

        table = self.ensure(spec)
        data = self._to_arrow(spec, frame)
        if data.num_rows == 0:
            return WriteResult(spec.path, table.version(), 0)
        version, retries = self._commit(table, lambda t: write_deltalake(t, data, mode="append"),
                                        f"append to {spec.path}")
        return WriteResult(spec.path, version, data.num_rows, retries)

    def rewrite(self, spec: TableSpec, change: Callable[[pd.DataFrame], pd.DataFrame | None]) -> WriteResult:
        """Replace the whole table, schema included, with ``change(rows)``: a non-additive migration step.

        ``rows`` are the stored rows in the stored schema; the result is validated against ``spec`` and
        becomes the table's only content and schema (old columns dropped, partitioning kept). Delta
        history is kept, so earlier versions still read the old rows. A conflicting commit reloads the
        table and calls ``change`` again; ``change`` returning None (already converted) writes nothing.
        Only inside ``migrating(spec)``, since it bypasses the schema-version gate.
        """
        from deltalake import write_deltalake

        if spec.path not in self._migrating:
            raise RuntimeError(f"table {spec.path}: rewrite replaces the whole table and is for migration steps "
                               f"only; call it inside `with lake.migrating(spec):`")
        table = self._open(spec.path)
        if table is None:
            raise TableVersionError(f"table {spec.path} does not exist yet, so there is nothing to rewrite")
        written = 0

        def attempt(loaded: Any) -> None:
            nonlocal written
            written = 0
            frame = change(loaded.to_pyarrow_table().to_pandas())
            if frame is None:
                return
            data = self._to_arrow(spec, frame)
            written = data.num_rows
            # predicate "true" makes the commit check concurrent appends (a plain overwrite does not, and
            # would keep their old-shape files beside the rewritten rows); a conflict re-runs ``change``.
            write_deltalake(loaded, data, mode="overwrite", schema_mode="overwrite", predicate="true",
                            partition_by=[spec.partition_by] if spec.partition_by else None)

        version, retries = self._commit(table, attempt, f"rewrite {spec.path} to its schema version "
                                                        f"{spec.schema_version}")
        return WriteResult(spec.path, version, written, retries)

    # -- reads -------------------------------------------------------------------------------

    def read(self, spec: TableSpec, where: dict[str, Any] | None = None, version: int | None = None,
             columns: Sequence[str] | None = None, arrow_strings: bool = False) -> pd.DataFrame:
        """Rows of the table (optionally at an earlier ``version``: time travel), filtered by equality.

        ``arrow_strings`` keeps text columns Arrow-backed (``pd.ArrowDtype``) instead of Python objects:
        columnar code (drift statistics over categories) then never builds a Python string per row.

        A table never created reads as a typed empty frame; a damaged one raises
        :class:`LakeTableError`; a version that does not exist raises :class:`TableVersionError`.
        """
        from deltalake.exceptions import DeltaError

        table = self._open(spec.path, version)
        if table is None:
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
        try:
            return _filtered_read(table, columns, where, filters, arrow_strings)
        except (DeltaError, OSError) as error:
            raise LakeTableError(spec.path, self.uri(spec), f"its data cannot be read ({_first_line(error)})") from error

    # -- recovery ----------------------------------------------------------------------------

    def restore(self, spec: TableSpec | str, version: int) -> RestoreResult:
        """Bring back ``version`` of a table as its newest version.

        A readable table gets a Delta RESTORE commit (history is kept). A table whose newest commits
        are unreadable (local roots only) has every log file after ``version`` moved into a folder
        ``_crucible_unreadable_commits_<UTC time>`` inside the table folder, so it reads at
        ``version`` again; when it still cannot be read there, the files are put back and the error
        says so.
        """
        table = _path(spec)
        try:
            loaded = self._open(table)
        except LakeTableError as error:
            return self._truncate_log(table, version, error)
        if loaded is None:
            raise TableVersionError(f"table {table} does not exist, so version {version} cannot be restored")
        latest = loaded.version()
        earliest = self._earliest_version(table)
        if not earliest <= version <= latest:
            raise TableVersionError(f"table {table} has versions {earliest}..{latest}; version {version} does not "
                                    f"exist")
        if version == latest:
            return RestoreResult(table, version, latest)
        self._with_retries(lambda: self._open(table).restore(version), f"restore {table} to version {version}")
        return RestoreResult(table, version, self.version(table))

    def _truncate_log(self, table: str, version: int, damage: LakeTableError) -> RestoreResult:
        log_dir = self._folder(table) / "_delta_log"
        if not self.local:
            raise LakeTableError(table, self.uri(table), f"{damage.problem}; moving unreadable commits aside is "
                                 f"only supported for local folders: restore the object-store prefix from a backup")
        if not log_dir.is_dir() or not any(_log_version(p.name) is not None for p in log_dir.iterdir()):
            raise LakeTableError(table, self.uri(table), f"{damage.problem}; there is no Delta log to restore "
                                 f"from: see README 'Recovering a damaged lake'")
        newest = max(v for p in log_dir.iterdir() if (v := _log_version(p.name)) is not None)
        if not 0 <= version < newest:
            raise TableVersionError(f"table {table} has log files for versions up to {newest}; restore a version "
                                    f"below {newest} to move the unreadable newer commits aside")
        later = [p for p in log_dir.iterdir() if (v := _log_version(p.name)) is not None and v > version]
        pointer = log_dir / "_last_checkpoint"
        checkpoint = self._last_checkpoint_version(log_dir)
        if pointer.exists() and (checkpoint is None or checkpoint > version):
            later.append(pointer)
        aside = self._folder(table) / f"{MOVED_COMMITS_PREFIX}{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}"
        aside.mkdir()
        for path in later:
            shutil.move(str(path), aside / path.name)
        self._checked_commits.clear()
        try:
            loaded = self._open(table)
            if loaded is None or loaded.version() != version:
                raise LakeTableError(table, self.uri(table), f"reads at version "
                                     f"{None if loaded is None else loaded.version()}, not {version}")
        except LakeTableError as error:
            for path in later:
                shutil.move(str(aside / path.name), path)
            aside.rmdir()
            raise LakeTableError(table, self.uri(table), f"still unreadable at version {version} after moving "
                                 f"the newer log files aside ({error.problem}); they were put back: try an "
                                 f"earlier version") from error
        log.info("restored %s to version %d by moving %d log files to %s", table, version, len(later), aside)
        return RestoreResult(table, version, version, tuple(sorted(p.name for p in later)), str(aside))


def _path(spec: TableSpec | str) -> str:
    return spec.path if isinstance(spec, TableSpec) else spec.strip("/")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _commit_problem(path: Path) -> str | None:
    text = path.read_text(errors="replace")
    if not text.strip():
        return "empty file"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError:
            return f"line {number} is not valid JSON"
        if not isinstance(action, dict) or len(action) != 1:
            return f"line {number} is not a Delta action"
    return None


def _filtered_read(table: Any, columns: Sequence[str] | None, where: dict[str, Any] | None,
                   filters: list | None, arrow_strings: bool = False) -> pd.DataFrame:
    """``table``'s rows matching ``filters`` (equality/``in`` on ``where``), as pandas.

    A table whose files were written by a merge can mix ``string`` and ``string_view`` columns, and
    pyarrow has no comparison kernel between the two (deltalake 1.6.6): such a read falls back to
    filtering the rows in pandas after reading them.
    """
    import pyarrow as pa
    import pyarrow.lib

    def as_pandas(data: pa.Table) -> pd.DataFrame:
        if not arrow_strings:
            return data.to_pandas()
        text = {pa.string(), pa.large_string(), pa.string_view()}
        return data.to_pandas(types_mapper=lambda kind: pd.ArrowDtype(kind) if kind in text else None)

    wanted = list(columns) if columns else None
    try:
        return as_pandas(table.to_pyarrow_table(columns=wanted, filters=filters))
    except pyarrow.lib.ArrowNotImplementedError:
        if not where:
            raise
    needed = None if wanted is None else list(dict.fromkeys([*wanted, *where]))
    frame = as_pandas(table.to_pyarrow_table(columns=needed))
    for column, value in where.items():
        allowed = list(value) if isinstance(value, list | tuple | set) else [value]
        frame = frame[frame[column].isin(allowed)]
    return frame.reset_index(drop=True)[wanted] if wanted else frame.reset_index(drop=True)
