"""The registry's append-only audit log: every change and every refusal, one row each.

A promotion is written with action ``promote``: that row is the event a sensor acts on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from crucible.lake import DeltaLake
from schemas import AUDIT_LOG


@dataclass(frozen=True)
class AuditEvent:
    action: str
    principal: str
    model_name: str | None = None
    version: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    allowed: bool = True
    reason: str | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))

    def row(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "at": self.at, "principal": self.principal, "action": self.action,
                "model_name": self.model_name, "version": self.version,
                "details": json.dumps(self.details, sort_keys=True, default=str), "allowed": self.allowed,
                "reason": self.reason}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditEvent:
        version = row.get("version")
        return cls(action=row["action"], principal=row["principal"], model_name=row.get("model_name"),
                   version=None if pd.isna(version) else int(version), details=json.loads(row["details"]),
                   allowed=bool(row["allowed"]), reason=None if pd.isna(row.get("reason")) else row["reason"],
                   event_id=row["event_id"], at=pd.Timestamp(row["at"]))


def write_events(lake: DeltaLake, events: Sequence[AuditEvent]) -> None:
    """Append ``events`` in one commit (a promotion and the archive it caused land together)."""
    if events:
        lake.append(AUDIT_LOG, pd.DataFrame([event.row() for event in events]))


def record(lake: DeltaLake, principal: str, action: str, model_name: str | None, version: int | None,
           details: dict[str, Any] | None = None, allowed: bool = True, reason: str | None = None) -> AuditEvent:
    event = AuditEvent(action, principal, model_name, version, dict(details or {}), allowed, reason)
    write_events(lake, [event])
    return event


def read_events(lake: DeltaLake, model_name: str | None = None, action: str | None = None,
                since: pd.Timestamp | None = None) -> list[AuditEvent]:
    """Events oldest first, optionally of one model, one action, and after ``since`` (a sensor's cursor)."""
    where = {k: v for k, v in {"model_name": model_name, "action": action}.items() if v is not None}
    rows = lake.read(AUDIT_LOG, where=where or None)
    if since is not None:
        rows = rows.loc[rows["at"] > since]
    rows = rows.sort_values(["at", "event_id"], kind="stable")
    return [AuditEvent.from_row(row) for row in rows.to_dict("records")]
