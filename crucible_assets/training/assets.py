"""Training assets: a supervised fine-tuned checkpoint from a recipe, plus curated feedback on a retraining."""

import dagster as dg
import pandas as pd

from crucible.quarantine import store_validated
from crucible.train.config import DeviceUnavailableError
from crucible.train.data import (
    RowsNotLoadedError,
    build_run_row,
    data_source,
    new_run_id,
    quarantine_rejected,
    select_feedback_rows,
    select_rows,
)
from crucible.train.pipeline import run_sft_recipe
from crucible.train.recipes import RecipeError, apply_overrides, load_recipe
from crucible.train.runs import feedback_lineage_edges, record_run
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import metric, run_record_metadata, training_metadata
from crucible_assets.training.config import SFTConfig
from crucible_assets.training.phases import phase_metadata
from resources.lake import LakeResource
from resources.trainer import TRAINING_GPU_POOL, TrainerResource
from schemas import LINEAGE_EDGES

CURATED_EXAMPLES_KEY = dg.AssetKey(["feedback", "curated_examples"])


@dg.asset(
    key=["training", "sft_checkpoint"], deps=[examples, CURATED_EXAMPLES_KEY], group_name="training",
    pool=TRAINING_GPU_POOL,
    kinds={"pytorch", "huggingface", "deltalake"}, owners=["team:ml-platform"],
    description="Supervised fine-tuning of the recipe's base model on its dataset, plus the curated feedback "
                "examples of data_window_start..data_window_end when set (a retraining); saves a Hugging Face "
                "checkpoint (safetensors + tokenizer) and records the run, its metrics and lineage.",
)
def sft_checkpoint(context: dg.AssetExecutionContext, config: SFTConfig, lake: LakeResource,
                   trainer: TrainerResource) -> dg.MaterializeResult:
    store = lake.lake()
    try:
        recipe = trainer.configure(apply_overrides(load_recipe(config.recipe), config.recipe_overrides()))
        dataset = recipe.dataset
        window = config.feedback_window()
        rows, version = select_rows(store, dataset.name, dataset.split, dataset.limit, dataset.table_version,
                                    recipe=recipe.name)
        # The same table version as the recipe's rows unless the recipe pins an older one.
        feedback = select_feedback_rows(store, *window, None if dataset.table_version is not None else version) \
            if window else None
    except (RecipeError, DeviceUnavailableError, RowsNotLoadedError, ValueError) as error:
        # The launchpad's or the trainer's settings are wrong: say so on top, not as a stack trace.
        raise dg.Failure(f"training/sft_checkpoint: {error}") from None
    run_id = config.resume_run_id or new_run_id(recipe.method)
    started = pd.Timestamp.now(tz="UTC")
    if feedback is not None and len(feedback.rows):
        rows = pd.concat([rows, feedback.rows], ignore_index=True)
    outcome = run_sft_recipe(recipe, rows, lake.artifact_dir("runs", run_id), trainer=trainer.settings(),
                             resume=bool(config.resume_run_id))
    quarantine_rejected(store, "sft", outcome.rejected, data_source(dataset.name, dataset.split, version))
    data_window = f"{config.data_window_start}..{config.data_window_end}".strip(".")
    run = build_run_row(
        run_id, recipe, dataset=dataset.name, dataset_version=version, steps=outcome.steps,
        final_loss=outcome.final_loss, tokens_per_second=outcome.tokens_per_second,
        checkpoint_uri=outcome.checkpoint_dir, started_at=started, trigger_reason=config.trigger_reason,
        data_window=data_window)
    stored_run, stored_metrics = record_run(store, run, outcome.history)
    if feedback is not None and len(feedback.rows):
        store_validated(store, LINEAGE_EDGES, feedback_lineage_edges(
            run_id, feedback.window, feedback.version, created_by="training/sft_checkpoint"), source=run_id)
    context.log.info("run %s: %d steps, final loss %s", run_id, outcome.steps, outcome.final_loss)
    return dg.MaterializeResult(metadata={
        **training_metadata(outcome.metric_summary), **run_record_metadata(stored_run), "run_id": run_id,
        **phase_metadata(outcome.phase_seconds, outcome.profile_trace),
        "checkpoint": dg.MetadataValue.path(outcome.checkpoint_dir), "recipe": recipe.name,
        "recipe_hash": run["recipe_hash"], "base_model": run["base_model"],
        "device": recipe.hyperparameters.device if recipe.backend.kind == "local" else "tinker",
        "dataset": f"{dataset.name}/{dataset.split}", "dataset_table_version": version,
        "train_examples": outcome.num_train, "eval_examples": outcome.num_eval,
        "rejected_examples": len(outcome.rejected), "resumed_from_step": outcome.resumed_from_step,
        "trigger_reason": config.trigger_reason, "data_window": data_window,
        "feedback_examples": 0 if feedback is None else len(feedback.rows),
        "feedback_table_version": -1 if feedback is None else feedback.version,
        "metrics_rows": stored_metrics.accepted, "steps": outcome.steps, "final_loss": metric(outcome.final_loss),
        "tokens_per_second": metric(outcome.tokens_per_second),
    })
