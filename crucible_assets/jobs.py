"""Jobs: the unpartitioned train → evaluate → register chain, and the daily feedback loop."""

import dagster as dg

from crucible_assets.partitions import daily_partitions, datasets_partitions

train_and_register = dg.AssetSelection.assets(
    dg.AssetKey(["training", "sft_checkpoint"]), dg.AssetKey(["evaluation", "eval_results"]),
    dg.AssetKey(["registry", "registered_model"]),
)

retrain_job = dg.define_asset_job(
    "retrain_job", selection=train_and_register,
    description="Fine-tune, evaluate and register a new model version (started by hand or by the drift sensor).",
)

daily_feedback_job = dg.define_asset_job(
    "daily_feedback_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["feedback", "inference_events"]),
                                       dg.AssetKey(["monitoring", "drift_report"])),
    partitions_def=daily_partitions,
    description="Serve a day of traffic with the registered model, then measure drift on it.",
)

daily_feedback_schedule = dg.build_schedule_from_partitioned_job(daily_feedback_job, hour_of_day=1)

dataset_ingest_job = dg.define_asset_job(
    "dataset_ingest_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["datasets", "examples"]), dg.AssetKey(["datasets", "splits"])),
    partitions_def=datasets_partitions,
    description="Load one dataset (a partition) into datasets/examples, check it, and split it.",
)
