"""Split rows into those that pass a table's schema and those that go to quarantine, with the reason.

Nothing is dropped: ``rows in == accepted + quarantined`` always holds, identical bad rows included
(a row's hash covers its record and its occurrence number within its source). Quarantined rows are
stored in ``quarantine/rows`` keyed by (table, source, row hash), and each carries an ``origin``: the
scope one write owns (``datasets/examples[dataset=gsm8k]``). A write with an origin replaces the
quarantine rows of that (table, origin), so re-ingesting a fixed file leaves no stale rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from crucible.lake import DeltaLake, WriteResult
from schemas import ALL_TABLES, QUARANTINE, TableSpec

_MAX_PASSES = 4


@dataclass
class Validated:
    accepted: pd.DataFrame
    quarantined: pd.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        return {"rows_in": len(self.accepted) + len(self.quarantined), "accepted": len(self.accepted),
                "quarantined": len(self.quarantined)}


def _json_record(record: dict) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def row_hash(record: dict, occurrence: int = 0) -> str:
    """Hash of a record and its occurrence number among identical records of one source.

    The first occurrence hashes the record alone (as before occurrence numbers existed), so rows
    quarantined by older code keep their key.
    """
    text = _json_record(record) + (f"\n#{occurrence}" if occurrence else "")
    return hashlib.sha256(text.encode()).hexdigest()


def _slice_value(value: object) -> str:
    if isinstance(value, list | tuple | set):
        return "|".join(sorted(_slice_value(v) for v in value))
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def quarantine_origin(table: TableSpec | str, where: Mapping[str, object]) -> str:
    """The origin (scope) of a write replacing ``where`` in ``table``: ``datasets/examples[dataset=gsm8k]``."""
    path = table.path if isinstance(table, TableSpec) else table
    return f"{path}[{', '.join(f'{k}={_slice_value(v)}' for k, v in sorted(where.items()))}]"


def source_origin(table: str, source: str) -> str:
    """The origin of rows merged without a scope: their own table and source."""
    return f"{table}[source={source}]"


def legacy_origin(table: str, source: str, record: str) -> str:
    """The origin of a row quarantined before origins existed (schema version 1), from what it holds.

    A row whose record carries its table's partition value gets the origin a write replacing that
    partition uses; any other row gets its source's origin.
    """
    spec = next((s for s in ALL_TABLES if s.path == table), None)
    try:
        values = json.loads(record)
    except ValueError:
        values = None
    if spec is not None and spec.partition_by and isinstance(values, dict) and values.get(spec.partition_by):
        return quarantine_origin(table, {spec.partition_by: values[spec.partition_by]})
    return source_origin(table, source)


def quarantine_rows(table: str, records: Iterable[tuple[dict, str, str]], day: dt.date | None = None,
                    origin: str | None = None) -> pd.DataFrame:
    """Quarantine frame from ``(record, source, reason)`` triples: one row per triple, duplicates included.

    ``origin`` defaults to each row's source origin; :func:`store_quarantined` sets it when it
    replaces a scope.
    """
    now = pd.Timestamp.now(tz="UTC")
    day = day or now.date()
    seen: dict[tuple[str, str], int] = defaultdict(int)
    rows = []
    for record, source, reason in records:
        text = _json_record(record)
        occurrence = seen[(source, text)]
        seen[(source, text)] += 1
        rows.append({"table": table, "source": source, "row_hash": row_hash(record, occurrence), "reason": reason,
                     "record": text, "day": day, "quarantined_at": now,
                     "origin": origin or source_origin(table, source)})
    return pd.DataFrame(rows, columns=QUARANTINE.columns)


def _describe(failures: pd.DataFrame) -> str:
    parts = []
    for _, case in failures.iterrows():
        column = case.get("column")
        where = f"column {column!r}" if isinstance(column, str) else "row"
        parts.append(f"{where} failed {case['check']} (value {case['failure_case']!r})")
    return "; ".join(dict.fromkeys(parts))


def validate_rows(frame: pd.DataFrame, spec: TableSpec, source: str | pd.Series,
                  day: dt.date | None = None) -> Validated:
    """Validate ``frame`` against ``spec``'s schema; failing rows are returned as quarantine rows.

    ``source`` names where each row came from (one string, or a Series aligned with ``frame``).
    Duplicate keys keep their first row; later ones are quarantined as duplicates.
    """
    frame = frame.reset_index(drop=True)
    sources = source if isinstance(source, pd.Series) else pd.Series([source] * len(frame))
    sources = sources.reset_index(drop=True)
    reasons: dict[int, list[str]] = defaultdict(list)

    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        for index in frame.index:
            reasons[index].append(f"missing columns {missing} for table {spec.path}")
    else:
        duplicated = frame.duplicated(list(spec.keys), keep="first")
        for index in frame.index[duplicated]:
            key = {k: frame.at[index, k] for k in spec.keys}
            reasons[index].append(f"duplicate key {key} in table {spec.path}")

    accepted = frame.loc[[i for i in frame.index if i not in reasons]]
    for _ in range(_MAX_PASSES):
        if accepted.empty:
            break
        try:
            accepted = spec.model.validate(accepted[spec.columns], lazy=True)
            break
        except pa.errors.SchemaErrors as errors:
            cases = errors.failure_cases
            row_cases = cases[cases["index"].notna()]
            if row_cases.empty:
                reason = _describe(cases)
                for index in accepted.index:
                    reasons[index].append(reason)
                accepted = accepted.iloc[0:0]
                break
            for index, group in row_cases.groupby("index"):
                reasons[int(index)].append(_describe(group))
            accepted = accepted.drop(index=[int(i) for i in row_cases["index"].unique()])
    else:
        for index in accepted.index:
            reasons[index].append(f"still failing {spec.path} validation after {_MAX_PASSES} passes")
        accepted = accepted.iloc[0:0]

    quarantined = quarantine_rows(
        spec.path,
        ((frame.loc[i].to_dict(), str(sources[i]), "; ".join(r)) for i, r in sorted(reasons.items())),
        day=day,
    )
    return Validated(accepted=accepted.reset_index(drop=True), quarantined=quarantined)


def store_quarantined(lake: DeltaLake, quarantined: pd.DataFrame, origin: str | None = None,
                      table: str | None = None) -> WriteResult | None:
    """Store quarantined rows in ``quarantine/rows``.

    Without ``origin`` the rows are merged on their key (re-quarantining a row is a no-op, and
    nothing is ever removed). With ``origin`` they replace every row of that (table, origin), so
    rows the source no longer produces disappear; an empty frame then clears the scope. ``table``
    names the table when the frame is empty (otherwise it is read from the rows).
    """
    if origin is None:
        return None if quarantined.empty else lake.upsert(QUARANTINE, quarantined)
    tables = set(quarantined["table"]) | ({table} if table else set())
    if len(tables) != 1:
        raise ValueError(f"quarantine scope {origin!r}: rows must belong to one table, got {sorted(tables) or 'none'}"
                         f" (pass table= for an empty frame)")
    if quarantined.empty and not lake.exists(QUARANTINE):
        return None
    scoped = quarantined.assign(origin=origin)
    return lake.replace_where(QUARANTINE, scoped, {"table": tables.pop(), "origin": origin})


@dataclass
class StoredTable:
    """What one validated write did: rows in, accepted, quarantined, and the Delta version written."""

    table: str
    rows_in: int
    accepted: int
    quarantined: int
    version: int
    reasons: list[str]


def store_validated(lake: DeltaLake, spec: TableSpec, frame: pd.DataFrame, source: str | pd.Series,
                    replace_where: dict | None = None, day: dt.date | None = None,
                    origin: str | None = None) -> StoredTable:
    """Validate ``frame``, quarantine what fails, and write the rest idempotently.

    With ``replace_where`` the matching slice (a partition) is replaced; otherwise rows are merged on
    the table's key. The quarantine rows are scoped by ``origin``, by default
    ``quarantine_origin(spec, replace_where)`` for a slice write (and no scope, so a merge, for a keyed
    write): the scope's old quarantine rows are replaced, so a fixed source leaves none behind.

    Order, and why: the quarantine rows are written first, then the accepted rows. Both writes are
    replace-by-scope (or keyed merges), so if the process dies between them a re-run rewrites both
    exactly. Writing the accepted rows last means a version of the accepted table, the one
    downstream readers and the asset's materialization see, never exists before its rejects are
    recorded: rows in = accepted + quarantined holds for every accepted version once it is visible.
    """
    validated = validate_rows(frame, spec, source, day=day)
    scope = origin or (quarantine_origin(spec, replace_where) if replace_where is not None else None)
    store_quarantined(lake, validated.quarantined, origin=scope, table=spec.path)
    if replace_where is not None:
        written = lake.replace_where(spec, validated.accepted, replace_where)
    else:
        written = lake.upsert(spec, validated.accepted)
    counts = validated.counts
    return StoredTable(spec.path, counts["rows_in"], counts["accepted"], counts["quarantined"], written.version,
                       validated.quarantined["reason"].tolist())
