"""Monitoring assets: the baseline snapshot drift is measured against, and a daily drift report against it."""

import dagster as dg
import pandas as pd
from pydantic import Field

from crucible.monitoring.baselines import latest_snapshot, take_snapshot
from crucible.monitoring.plots import plots_markdown, save_plots
from crucible.monitoring.policy import drift_rule
from crucible.monitoring.report import report_day
from crucible.quarantine import store_validated
from crucible_assets.automation import after_new_feedback
from crucible_assets.feedback.assets import inference_events
from crucible_assets.metadata import metric, table_definition_metadata, table_metadata
from crucible_assets.partitions import daily_partitions, single_day
from resources.embedder import EmbedderResource
from resources.lake import LakeResource
from resources.monitoring import DriftPolicyResource
from schemas import BASELINES, DRIFT_REPORTS

SIGNALS_KEY = dg.AssetKey(["feedback", "signals"])
QUALITY_KEY = dg.AssetKey(["feedback", "quality"])
EMBEDDINGS_KEY = dg.AssetKey(["feedback", "embeddings"])


class BaselineConfig(dg.Config):
    """Why the snapshot is taken and which served traffic it takes (a promotion sets both)."""

    trigger: str = Field("manual", description="Why: 'manual', or the promotion that started it.")
    reference_model_version: int = Field(0, ge=0, description="Take served events of this model version only "
                                                              "(the production version a promotion replaced); "
                                                              "0 = every version.")


@dg.asset(
    metadata=table_definition_metadata(BASELINES),
    key=["monitoring", "baseline"], deps=[inference_events], group_name="monitoring", kinds={"deltalake"},
    owners=["team:ml-platform"],
    description="A baseline snapshot pinned to the Delta versions it read: the training prompts of the recipe "
                "dataset (prompt length, prompt texts for embeddings) and the last days of served events "
                "(response length, latency, deployment, quality, signals). Taken on each promotion to "
                "production (baseline_promotion_sensor) and on request (refresh_baseline_job).",
)
def baseline(context: dg.AssetExecutionContext, config: BaselineConfig, lake: LakeResource,
             drift_policy: DriftPolicyResource) -> dg.MaterializeResult:
    try:
        snapshot, stored = take_snapshot(
            lake.lake(), drift_policy.baseline_dataset, trigger=config.trigger,
            traffic_days=drift_policy.baseline_traffic_days,
            reference_version=config.reference_model_version or None,
            embedding_sample=drift_policy.embedding_sample)
    except ValueError as error:
        raise dg.Failure(f"monitoring/baseline: {error}") from None
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "snapshot_id": snapshot.snapshot_id, "trigger": snapshot.trigger,
        "table_versions": dg.MetadataValue.json(snapshot.table_versions),
        "features": dg.MetadataValue.json({name: {"kind": f.kind, "n": f.size, "source": f.source}
                                           for name, f in snapshot.features.items()}),
    })


@dg.asset(
    metadata=table_definition_metadata(DRIFT_REPORTS),
    key=["monitoring", "drift_report"], deps=[inference_events, baseline, QUALITY_KEY, SIGNALS_KEY, EMBEDDINGS_KEY],
    automation_condition=after_new_feedback(baseline.key),
    partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.multi_run(1), group_name="monitoring",
    kinds={"deltalake", "scipy"}, owners=["team:ml-platform"],
    description="Per day, against the latest baseline snapshot: KS and PSI on lengths, latency and quality "
                "scores; chi-squared and Jensen-Shannon on deployments, failed checks and signal types; "
                "two-proportion tests on pass and thumbs-down rates; MMD on prompt embeddings. Each verdict "
                "says why, with a baseline-vs-day plot per feature. One run per day.",
)
def drift_report(context: dg.AssetExecutionContext, lake: LakeResource, drift_policy: DriftPolicyResource,
                 embedder: EmbedderResource) -> dg.MaterializeResult:
    day = single_day(context)
    store = lake.lake()
    snapshot = latest_snapshot(store)
    if snapshot is None:
        # Nothing promoted or refreshed yet: the first report takes the snapshot, from days before its own.
        try:
            snapshot, _ = take_snapshot(store, drift_policy.baseline_dataset, trigger=f"first drift report ({day})",
                                        traffic_days=drift_policy.baseline_traffic_days, before=day,
                                        embedding_sample=drift_policy.embedding_sample)
        except ValueError as error:
            raise dg.Failure(f"monitoring/drift_report {day}: {error}") from None
        context.log.info("no baseline snapshot yet: took %s", snapshot.describe())
    embed = None
    if drift_policy.embedding_drift:
        from crucible.feedback.embeddings import embed_cached

        model = embedder.embedder()
        embed = lambda texts: embed_cached(store, model, texts)  # noqa: E731 - bound to this run's lake and model
    try:
        report = report_day(store, day, snapshot, drift_policy.thresholds(), embed, plots=drift_policy.plots)
    except ValueError as error:
        raise dg.Failure(f"monitoring/drift_report {day}: {error}") from None
    stored = store_validated(store, DRIFT_REPORTS, pd.DataFrame(report.rows()),
                             source=f"drift {day}", replace_where={"day": day}, day=day)
    paths = save_plots(report.plots, lake.artifact_dir("monitoring", "drift", day.isoformat())) if report.plots else []
    # "drifted" is the policy's verdict (what the retraining sensor acts on), not "some detector fired".
    drifted, verdict = drift_rule(drift_policy.policy(), day, pd.DataFrame(report.rows()))
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "day": day.isoformat(), "baseline": snapshot.snapshot_id,
        "drifted": drifted, "verdict": verdict, "drifted_detectors": len(report.drifted()),
        "detectors": dg.MetadataValue.md(report.markdown(drift_policy.policy())),
        **({"distribution_plots": dg.MetadataValue.md(plots_markdown(report.plots)),
            "plots_folder": dg.MetadataValue.path(str(paths[0].parent))} if paths else {}),
        **{f"{r.detector}/{r.feature}": metric(r.statistic) for r in report.results},
    })

