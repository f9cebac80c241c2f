"""Drift closes the loop: a drifted day starts a retraining run that says why and on which window."""

import datetime as dt

import dagster as dg

from crucible_assets.jobs import retrain_job
from resources.lake import LakeResource
from resources.monitoring import DriftPolicyResource
from schemas import DRIFT_REPORTS


@dg.asset_sensor(
    asset_key=dg.AssetKey(["monitoring", "drift_report"]), job=retrain_job, minimum_interval_seconds=60,
    description="Requests a retraining run when a day's drift report crosses the drift policy's thresholds.",
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry,
                            lake: LakeResource, drift_policy: DriftPolicyResource):
    day_key = asset_event.dagster_event.partition if asset_event.dagster_event else None
    if day_key is None:
        return dg.SkipReason("drift report materialization without a day partition")
    day = dt.date.fromisoformat(day_key)
    report = lake.lake().read(DRIFT_REPORTS, where={"day": day})
    drifted = report[report["drifted"]]
    if drifted.empty:
        return dg.SkipReason(f"no drift on {day_key}: " + ", ".join(
            f"{r.detector}={r.statistic:.3f}" for r in report.itertuples()))
    reason = "drift on {}: {}".format(day_key, ", ".join(
        f"{r.detector} {r.statistic:.3f} > threshold {r.threshold}" if r.detector == "psi"
        else f"{r.detector} p={r.p_value:.2g} < {r.threshold}" for r in drifted.itertuples()))
    window_start = day - dt.timedelta(days=drift_policy.retrain_window_days - 1)
    return dg.RunRequest(
        run_key=f"drift-retrain-{day_key}",
        run_config={"ops": {"training__sft_checkpoint": {"config": {
            "trigger_reason": reason, "data_window_start": window_start.isoformat(), "data_window_end": day_key,
        }}}},
        tags={"crucible/trigger": "drift", "crucible/drift_day": day_key},
    )
