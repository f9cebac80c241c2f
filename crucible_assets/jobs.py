"""Jobs: the unpartitioned curate → train → evaluate → register chain, and the daily feedback loop."""

import dagster as dg

from crucible_assets.partitions import daily_partitions, datasets_partitions

train_and_register = dg.AssetSelection.assets(
    dg.AssetKey(["feedback", "curated_examples"]), dg.AssetKey(["training", "sft_checkpoint"]),
    dg.AssetKey(["evaluation", "eval_results"]), dg.AssetKey(["registry", "registered_model"]),
)

retrain_job = dg.define_asset_job(
    "retrain_job", selection=train_and_register,
    description="Curate a feedback window, fine-tune on the recipe's data plus its curated examples, evaluate and "
                "register a new model version (by hand, or by a retraining sensor with the window in the run "
                "config: feedback__curated_examples.window_start/_end and training__sft_checkpoint."
                "data_window_start/_end). Without a window it trains on the recipe's data only.",
)

daily_feedback_job = dg.define_asset_job(
    "daily_feedback_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["feedback", "inference_events"]),
                                       dg.AssetKey(["feedback", "signals"]), dg.AssetKey(["feedback", "quality"]),
                                       dg.AssetKey(["feedback", "embeddings"]),
                                       dg.AssetKey(["monitoring", "drift_report"])),
    partitions_def=daily_partitions,
    description="Serve a day of traffic with the registered model, sum its signals, check and embed it, then "
                "measure drift on it.",
)

refresh_baseline_job = dg.define_asset_job(
    "refresh_baseline_job", selection=dg.AssetSelection.assets(dg.AssetKey(["monitoring", "baseline"])),
    description="Take a new baseline snapshot for drift (also started by each promotion to production).",
)

daily_feedback_schedule = dg.build_schedule_from_partitioned_job(daily_feedback_job, hour_of_day=1)

dataset_ingest_job = dg.define_asset_job(
    "dataset_ingest_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["datasets", "examples"]), dg.AssetKey(["datasets", "splits"])),
    partitions_def=datasets_partitions,
    description="Load one dataset (a partition) into datasets/examples, check it, and split it.",
)

feedback_export_job = dg.define_asset_job(
    "feedback_export_job", selection=dg.AssetSelection.assets(dg.AssetKey(["feedback", "preference_pairs"])),
    description="Build the preference pairs of a feedback window (edits over originals, thumbs up over down) for "
                "DPO; `crucible feedback export` writes them (or the curated examples) as JSONL, Parquet or a "
                "Hugging Face datasets folder.",
)
