"""Retraining sensors (drift, low quality, curated volume) and the promotion sensor that takes a new baseline.

Each retraining sensor reads new materializations of its asset (all days, in order), asks the core
policy (``crucible.monitoring.policy.decide``) about the window ending on each day, and requests
``retrain_job`` with run key ``retrain-<start>-<end>``. Run keys are per sensor, so before requesting,
a sensor also looks in the instance for any run tagged with the same ``crucible/retrain_window`` (any
status, any trigger, started by the demo or the UI) and skips the window when one exists.
"""

import datetime as dt
from collections.abc import Iterable

import dagster as dg
import pandas as pd

from crucible.feedback.curation import days_of
from crucible.monitoring.policy import WINDOW_TAG, RetrainDecision, curatable_count, decide, retraining_tags
from crucible.registry.audit import AuditEvent
from crucible_assets.feedback.curation import curated_examples
from crucible_assets.jobs import refresh_baseline_job, retrain_job
from crucible_assets.monitoring.assets import QUALITY_KEY, SIGNALS_KEY, baseline, drift_report
from crucible_assets.registry.sensors import build_promotion_sensor
from crucible_assets.training.assets import sft_checkpoint
from resources.lake import LakeResource
from resources.monitoring import DriftPolicyResource
from schemas import DRIFT_REPORTS, QUALITY, SIGNALS


def retraining_run_config(decision: RetrainDecision) -> dict:
    """The run config of a retraining of the decision's window: curate the window, train on it, say why."""
    start, end = decision.window_start.isoformat(), decision.window_end.isoformat()
    return {"ops": {
        curated_examples.key.to_python_identifier(): {"config": {"window_start": start, "window_end": end}},
        sft_checkpoint.key.to_python_identifier(): {"config": {
            "trigger_reason": decision.reason, "data_window_start": start, "data_window_end": end}},
    }}


def existing_retraining(instance: dg.DagsterInstance, window: str) -> str | None:
    """The id of a retraining run (any status) whose window covers this window's last day, else None.

    Windows slide by day, so "one run per window" must mean one run per stretch of days: a day that
    an earlier retraining already trained on does not start another one with a shifted window.
    """
    start, end = (dt.date.fromisoformat(part) for part in window.split(".."))
    exact = instance.get_run_records(filters=dg.RunsFilter(tags={WINDOW_TAG: window}), limit=1)
    if exact:
        return exact[0].dagster_run.run_id
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=retrain_job.name), limit=200):
        tagged = record.dagster_run.tags.get(WINDOW_TAG)
        if not tagged or ".." not in tagged:
            continue
        first, last = (dt.date.fromisoformat(part) for part in tagged.split(".."))
        if first <= end <= last:
            return record.dagster_run.run_id
    return None


def new_days(context: dg.SensorEvaluationContext, key: dg.AssetKey) -> tuple[list[dt.date], str | None]:
    """Days newly materialized for ``key`` since the cursor (a storage id), oldest first, and the next cursor."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=100, ascending=True).records
    days = [dt.date.fromisoformat(k) for k in dict.fromkeys(r.partition_key for r in records if r.partition_key)]
    return days, str(records[-1].storage_id) if records else context.cursor


def retraining_result(context: dg.SensorEvaluationContext, decisions: Iterable[tuple[RetrainDecision, dict]],
                      cursor: str | None) -> dg.SensorResult:
    """One run request per window that a decision retrains and no run holds yet; the rest say why not."""
    requests, notes, requested = [], [], set()
    for decision, extra_tags in decisions:
        if not decision.retrain:
            notes.append(decision.reason)
        elif decision.run_key in requested:
            notes.append(f"{decision.window}: requested already in this tick")
        elif run_id := existing_retraining(context.instance, decision.window):
            notes.append(f"{decision.window}: retraining run {run_id} exists already, {decision.trigger} does not "
                         f"request another ({decision.reason})")
        else:
            requested.add(decision.run_key)
            requests.append(dg.RunRequest(run_key=decision.run_key, run_config=retraining_run_config(decision),
                                          tags={**retraining_tags(decision), **extra_tags}))
    for note in notes:
        context.log.info(note)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="; ".join(notes) or "nothing new", cursor=cursor)


@dg.sensor(
    job=retrain_job, minimum_interval_seconds=60,
    description="Reads every new drift-report materialization (all days, in order) and requests one retraining "
                "per window when the day's verdicts meet the drift rule; skips windows that already have a run.",
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                            drift_policy: DriftPolicyResource) -> dg.SensorResult:
    days, cursor = new_days(context, drift_report.key)
    if not days:
        return dg.SensorResult(skip_reason="no new drift reports", cursor=cursor)
    store, policy = lake.lake(), drift_policy.policy()
    return retraining_result(context, (
        (decide(policy, day, drift_report=store.read(DRIFT_REPORTS, where={"day": day})),
         {"crucible/drift_day": day.isoformat()}) for day in days), cursor)


def _window_rows(store, spec, policy, day: dt.date) -> pd.DataFrame:
    return store.read(spec, where={"day": days_of(*policy.window(day))}) if store.exists(spec) else pd.DataFrame()


@dg.sensor(
    job=retrain_job, minimum_interval_seconds=60,
    description="Reads every new feedback/quality materialization and requests one retraining per window whose "
                "pass rate is below the policy's minimum; skips windows that already have a run.",
)
def quality_retraining_sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                              drift_policy: DriftPolicyResource) -> dg.SensorResult:
    days, cursor = new_days(context, QUALITY_KEY)
    if not days:
        return dg.SensorResult(skip_reason="no new quality checks", cursor=cursor)
    store, policy = lake.lake(), drift_policy.policy()
    return retraining_result(context, (
        (decide(policy, day, quality=_window_rows(store, QUALITY, policy, day)), {}) for day in days), cursor)


@dg.sensor(
    job=retrain_job, minimum_interval_seconds=300,
    description="Reads every new feedback/signals materialization and requests one retraining per window holding "
                "enough curatable examples (edits, or positive signals on answers that passed the quality "
                "checks); skips windows that already have a run.",
)
def curated_volume_retraining_sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                                     drift_policy: DriftPolicyResource) -> dg.SensorResult:
    days, cursor = new_days(context, SIGNALS_KEY)
    if not days:
        return dg.SensorResult(skip_reason="no new signals", cursor=cursor)
    store, policy = lake.lake(), drift_policy.policy()
    decisions = []
    for day in days:
        signals = _window_rows(store, SIGNALS, policy, day)
        count = curatable_count(signals, _window_rows(store, QUALITY, policy, day)) if len(signals) else 0
        decisions.append((decide(policy, day, curated_count=count), {}))
    return retraining_result(context, decisions, cursor)


def baseline_run_config(event: AuditEvent) -> dict:
    """A promotion's snapshot: served traffic of the production version it replaced (all traffic on a first
    promotion)."""
    archived = event.details.get("archived") or []
    return {"ops": {baseline.key.to_python_identifier(): {"config": {
        "trigger": f"promotion of {event.model_name} v{event.version} ({event.event_id})",
        "reference_model_version": int(archived[0]) if archived else 0}}}}


baseline_promotion_sensor = build_promotion_sensor(refresh_baseline_job, baseline_run_config,
                                                   name="baseline_promotion_sensor")
