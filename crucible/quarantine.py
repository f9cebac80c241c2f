"""Split rows into those that pass a table's schema and those that go to quarantine, with the reason.

Nothing is dropped: ``rows in == accepted + quarantined`` always holds, and quarantined rows are
stored in ``quarantine/rows`` keyed by (table, source, row hash), so a re-run does not repeat them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from crucible.lake import DeltaLake, WriteResult
from schemas import QUARANTINE, TableSpec

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


def row_hash(record: dict) -> str:
    return hashlib.sha256(_json_record(record).encode()).hexdigest()


def quarantine_rows(table: str, records: Iterable[tuple[dict, str, str]], day: dt.date | None = None) -> pd.DataFrame:
    """Quarantine frame from ``(record, source, reason)`` triples."""
    now = pd.Timestamp.now(tz="UTC")
    day = day or now.date()
    rows = [{"table": table, "source": source, "row_hash": row_hash(record), "reason": reason,
             "record": _json_record(record), "day": day, "quarantined_at": now}
            for record, source, reason in records]
    frame = pd.DataFrame(rows, columns=QUARANTINE.columns)
    return frame.drop_duplicates(["table", "source", "row_hash"])


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


def store_quarantined(lake: DeltaLake, quarantined: pd.DataFrame) -> WriteResult | None:
    """Merge quarantined rows into ``quarantine/rows``; re-quarantining the same row is a no-op."""
    if quarantined.empty:
        return None
    return lake.upsert(QUARANTINE, quarantined)


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
                    replace_where: dict | None = None, day: dt.date | None = None) -> StoredTable:
    """Validate ``frame``, quarantine what fails, and write the rest idempotently.

    With ``replace_where`` the matching slice (a partition) is replaced; otherwise rows are merged on
    the table's key.
    """
    validated = validate_rows(frame, spec, source, day=day)
    store_quarantined(lake, validated.quarantined)
    if replace_where is not None:
        written = lake.replace_where(spec, validated.accepted, replace_where)
    else:
        written = lake.upsert(spec, validated.accepted)
    counts = validated.counts
    return StoredTable(spec.path, counts["rows_in"], counts["accepted"], counts["quarantined"], written.version,
                       validated.quarantined["reason"].tolist())
