"""Registry assets: evaluated checkpoints become numbered model versions."""

import dagster as dg

from crucible.registry.store import register_checkpoint
from crucible.train.runs import latest_run
from crucible_assets.evaluation.assets import eval_results
from crucible_assets.metadata import table_metadata
from crucible_assets.registry import MODEL_NAME
from resources.lake import LakeResource
from schemas import EVAL_SUMMARIES


@dg.asset(
    key=["registry", "registered_model"], deps=[eval_results], group_name="registry", kinds={"deltalake"},
    owners=["team:ml-platform"],
    description="Registers the evaluated checkpoint as the next version of the model (sha256, metrics, lineage).",
)
def registered_model(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    store = lake.lake()
    run = latest_run(store)
    summaries = store.read(EVAL_SUMMARIES, where={"model_version": run["run_id"]})
    metrics = {f"{r.benchmark}/{r.metric}": float(r.value) for r in summaries.itertuples()}
    row, stored = register_checkpoint(store, MODEL_NAME, run, metrics)
    context.log.info("registered %s v%s from run %s", MODEL_NAME, row["version"], run["run_id"])
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "model_name": MODEL_NAME, "version": row["version"],
        "sha256": row["sha256"], "artifact_uri": dg.MetadataValue.path(row["artifact_uri"]),
        "training_run_id": row["training_run_id"], "metrics": dg.MetadataValue.json(metrics),
    })
