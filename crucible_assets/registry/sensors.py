"""Promotions reach deployment: a sensor turns each new ``promote`` row of the audit log into a run request.

The target is pluggable: :func:`build_promotion_sensor` takes the deployment job (and how to configure
a run from a promotion). Until the deployment layer provides one, ``model_promotion_sensor`` has no job:
it logs each promotion and records it as an observation of ``registry/registered_model``.
"""

import json
from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

from crucible.lake import DeltaLake
from crucible.registry.audit import AuditEvent, read_events
from crucible_assets.registry.assets import registered_model
from resources.lake import LakeResource

PromotionRunConfig = Callable[[AuditEvent], dict[str, Any]]
# A job definition or what dg.define_asset_job returns (its class is not exported by dagster).
DeploymentJob = Any


def promotions_after(store: DeltaLake, cursor: str | None) -> tuple[list[AuditEvent], str | None]:
    """Allowed ``promote`` events newer than ``cursor``, oldest first, and the cursor after them.

    The cursor is the newest event time plus the ids seen at exactly that time, so an event written
    later with the same timestamp is still picked up once, and none is picked up twice.
    """
    state = json.loads(cursor) if cursor else {"at": None, "seen": []}
    since = pd.Timestamp(state["at"]) - pd.Timedelta(microseconds=1) if state["at"] else None
    seen = set(state["seen"])
    events = [e for e in read_events(store, action="promote", since=since) if e.allowed and e.event_id not in seen]
    if not events:
        return [], cursor
    newest = events[-1].at
    at_newest = [e.event_id for e in events if e.at == newest]
    if state["at"] and pd.Timestamp(state["at"]) == newest:
        at_newest = sorted(seen | set(at_newest))
    return events, json.dumps({"at": newest.isoformat(), "seen": sorted(at_newest)})


def promotion_tags(event: AuditEvent) -> dict[str, str]:
    return {"crucible/model": str(event.model_name), "crucible/version": str(event.version),
            "crucible/promote_event": event.event_id, "crucible/promoted_by": event.principal}


def build_promotion_sensor(job: DeploymentJob | None = None,
                           run_config_for: PromotionRunConfig | None = None, name: str = "model_promotion_sensor",
                           minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """A sensor requesting one run of ``job`` per promotion (run key = the event id), configured by
    ``run_config_for(event)``; with no ``job`` it records the promotions instead."""

    def evaluate(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        events, cursor = promotions_after(lake.lake(), context.cursor)
        if not events:
            return dg.SensorResult(skip_reason="no new promotions", cursor=cursor)
        for event in events:
            context.log.info("promotion: %s v%s to production by %s (event %s)", event.model_name, event.version,
                             event.principal, event.event_id)
        if job is not None:
            return dg.SensorResult(cursor=cursor, run_requests=[
                dg.RunRequest(run_key=f"promote-{event.event_id}", job_name=job.name,
                              run_config=run_config_for(event) if run_config_for else {}, tags=promotion_tags(event))
                for event in events])
        observations = [dg.AssetObservation(asset_key=registered_model.key, metadata={
            "promoted": f"{event.model_name} v{event.version}", "stage": "production", **promotion_tags(event),
            "archived": dg.MetadataValue.json(event.details.get("archived", [])), "at": event.at.isoformat()})
            for event in events]
        return dg.SensorResult(cursor=cursor, asset_events=observations,
                               skip_reason=f"no deployment job configured: recorded {len(events)} promotion(s)")

    return dg.sensor(
        name=name, job=job, minimum_interval_seconds=minimum_interval_seconds,
        description="Reads new 'promote' events of registry/audit_log (cursor: last event time and ids) and "
                    + (f"requests one {job.name} run per promotion." if job is not None else
                       "records each as an observation of registry/registered_model (no deployment job yet)."),
    )(evaluate)


model_promotion_sensor = build_promotion_sensor()
