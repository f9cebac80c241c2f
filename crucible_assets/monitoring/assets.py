"""Monitoring assets: the reference distribution and a daily drift report against it."""

import datetime as dt

import dagster as dg
import pandas as pd

from crucible.feedback.events import prompt_length
from crucible.monitoring.baselines import FEATURE, prompt_length_baseline
from crucible.monitoring.drift import daily_drift_rows
from crucible.quarantine import store_validated
from crucible_assets.feedback.assets import inference_events
from crucible_assets.metadata import table_metadata
from crucible_assets.partitions import checked_partition_keys, daily_partitions
from resources.lake import LakeResource
from resources.monitoring import DriftPolicyResource
from schemas import DRIFT_REPORTS, INFERENCE_EVENTS


@dg.asset(
    key=["monitoring", "drift_report"], deps=[inference_events], partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(), group_name="monitoring", kinds={"deltalake", "scipy"},
    owners=["team:ml-platform"],
    description="Per day: KS test and PSI of prompt length against the training prompts' distribution.",
)
def drift_report(context: dg.AssetExecutionContext, lake: LakeResource,
                 drift_policy: DriftPolicyResource) -> dg.MaterializeResult:
    days = checked_partition_keys(context)
    store = lake.lake()
    baseline_id, baseline = prompt_length_baseline(store, drift_policy.baseline_dataset)
    summary = {}
    stored = None
    for key in days:
        day = dt.date.fromisoformat(key)
        prompts = store.read(INFERENCE_EVENTS, where={"day": day}, columns=["prompt"])["prompt"].tolist()
        if not prompts:
            raise dg.Failure(f"no inference events on {key}: materialize feedback/inference_events for that day")
        rows = daily_drift_rows(day, baseline, prompt_length(prompts), baseline_id, FEATURE,
                                drift_policy.psi_threshold, drift_policy.ks_p_value, drift_policy.psi_bins)
        stored = store_validated(store, DRIFT_REPORTS, pd.DataFrame(rows), source=f"drift {key}",
                                 replace_where={"day": day}, day=day)
        summary[key] = {r["detector"]: round(r["statistic"], 4) for r in rows} | {
            "drifted": any(r["drifted"] for r in rows)}
    latest = summary[days[-1]]
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "psi": latest["psi"], "ks": latest["ks"], "drifted": latest["drifted"],
        "days": dg.MetadataValue.json(summary), "baseline_id": baseline_id,
    })

