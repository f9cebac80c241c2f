"""Drift closes the loop: a drifted day starts a retraining run that says why and on which window."""

import datetime as dt

import dagster as dg

from crucible_assets.jobs import retrain_job
from resources.lake import LakeResource
from resources.monitoring import DriftPolicyResource
from schemas import DRIFT_REPORTS

DRIFT_REPORT_KEY = dg.AssetKey(["monitoring", "drift_report"])


def retraining_request(day_key: str, report, policy: DriftPolicyResource) -> dg.RunRequest | None:
    """A run request for ``day_key`` when its report drifted under the policy's rule, else None."""
    drifted = report[report["drifted"]]
    confirmed = len(drifted) == len(report) if policy.rule == "all" else len(drifted) > 0
    if report.empty or not confirmed:
        return None
    reason = "drift on {}: {}".format(day_key, ", ".join(
        f"psi {r.statistic:.3f} > {r.threshold}" if r.detector == "psi"
        else f"{r.detector} p={r.p_value:.2g} < {r.threshold}" for r in drifted.itertuples()))
    day = dt.date.fromisoformat(day_key)
    window_start = day - dt.timedelta(days=policy.retrain_window_days - 1)
    return dg.RunRequest(
        run_key=f"drift-retrain-{day_key}",
        run_config={"ops": {"training__sft_checkpoint": {"config": {
            "trigger_reason": reason, "data_window_start": window_start.isoformat(), "data_window_end": day_key,
        }}}},
        tags={"crucible/trigger": "drift", "crucible/drift_day": day_key},
    )


@dg.sensor(
    job=retrain_job, minimum_interval_seconds=60,
    description="Reads every new drift-report materialization (all days, in order) and requests a retraining "
                "run for each drifted day, with the reason and the data window in the run config.",
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext, lake: LakeResource,
                            drift_policy: DriftPolicyResource):
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DRIFT_REPORT_KEY, after_storage_id=after), limit=100, ascending=True,
    ).records
    if not records:
        return dg.SkipReason("no new drift reports")
    store = lake.lake()
    requests, quiet = [], []
    for day_key in dict.fromkeys(r.partition_key for r in records if r.partition_key):
        report = store.read(DRIFT_REPORTS, where={"day": dt.date.fromisoformat(day_key)})
        request = retraining_request(day_key, report, drift_policy)
        if request:
            requests.append(request)
        else:
            quiet.append(day_key + " (" + ", ".join(
                f"{r.detector} {r.statistic:.3f}{' drifted' if r.drifted else ''}" for r in report.itertuples()) + ")")
    cursor = str(records[-1].storage_id)
    if not requests:
        return dg.SensorResult(skip_reason=f"no drift on {', '.join(quiet)}", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
