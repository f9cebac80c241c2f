"""Training assets: a supervised fine-tuned checkpoint from a recipe and a dataset partition."""

import dagster as dg
import pandas as pd

from crucible.train.config import DeviceUnavailableError
from crucible.train.data import (
    RowsNotLoadedError,
    build_run_row,
    data_source,
    new_run_id,
    quarantine_rejected,
    select_rows,
)
from crucible.train.pipeline import run_sft_recipe
from crucible.train.recipes import RecipeError, apply_overrides, load_recipe
from crucible.train.runs import record_run
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import table_metadata, training_metadata
from crucible_assets.training.config import SFTConfig
from resources.lake import LakeResource
from resources.trainer import TrainerResource


@dg.asset(
    key=["training", "sft_checkpoint"], deps=[examples], group_name="training",
    kinds={"pytorch", "huggingface", "deltalake"}, owners=["team:ml-platform"],
    description="Supervised fine-tuning of the recipe's base model on its dataset; saves a Hugging Face "
                "checkpoint (safetensors + tokenizer) and records the run, its metrics and lineage.",
)
def sft_checkpoint(context: dg.AssetExecutionContext, config: SFTConfig, lake: LakeResource,
                   trainer: TrainerResource) -> dg.MaterializeResult:
    store = lake.lake()
    try:
        recipe = trainer.configure(apply_overrides(load_recipe(config.recipe), config.recipe_overrides()))
        dataset = recipe.dataset
        rows, version = select_rows(store, dataset.name, dataset.split, dataset.limit, dataset.table_version,
                                    recipe=recipe.name)
    except (RecipeError, DeviceUnavailableError, RowsNotLoadedError) as error:
        # The launchpad's or the trainer's settings are wrong: say so on top, not as a stack trace.
        raise dg.Failure(f"training/sft_checkpoint: {error}") from None
    run_id = config.resume_run_id or new_run_id(recipe.method)
    started = pd.Timestamp.now(tz="UTC")
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
    context.log.info("run %s: %d steps, final loss %s", run_id, outcome.steps, outcome.final_loss)
    return dg.MaterializeResult(metadata={
        **training_metadata(outcome.metric_summary), **table_metadata(stored_run), "run_id": run_id,
        "checkpoint": dg.MetadataValue.path(outcome.checkpoint_dir), "recipe": recipe.name,
        "recipe_hash": run["recipe_hash"], "base_model": run["base_model"],
        "device": recipe.hyperparameters.device if recipe.backend.kind == "local" else "tinker",
        "dataset": f"{dataset.name}/{dataset.split}", "dataset_table_version": version,
        "train_examples": outcome.num_train, "eval_examples": outcome.num_eval,
        "rejected_examples": len(outcome.rejected), "resumed_from_step": outcome.resumed_from_step,
        "trigger_reason": config.trigger_reason, "data_window": data_window,
        "metrics_rows": stored_metrics.accepted, "final_loss": outcome.final_loss,
        "tokens_per_second": outcome.tokens_per_second,
    })
