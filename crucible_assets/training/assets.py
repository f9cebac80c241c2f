"""Training assets: a supervised fine-tuned checkpoint from a recipe and a dataset partition."""

import datetime as dt
import uuid

import dagster as dg
import pandas as pd

from crucible.quarantine import quarantine_rows, store_quarantined
from crucible.train.config import DeviceUnavailableError
from crucible.train.pipeline import run_sft_recipe
from crucible.train.recipes import RecipeError, apply_overrides, load_recipe, recipe_hash
from crucible.train.runs import record_run
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import table_metadata
from crucible_assets.training.config import SFTConfig
from resources.lake import LakeResource
from resources.trainer import TrainerResource
from schemas import EXAMPLES


@dg.asset(
    key=["training", "sft_checkpoint"], deps=[examples], group_name="training",
    kinds={"pytorch", "huggingface", "deltalake"}, owners=["team:ml-platform"],
    description="Supervised fine-tuning of the recipe's base model on its dataset; saves a Hugging Face "
                "checkpoint (safetensors + tokenizer) and records the run, its metrics and lineage.",
)
def sft_checkpoint(context: dg.AssetExecutionContext, config: SFTConfig, lake: LakeResource,
                   trainer: TrainerResource) -> dg.MaterializeResult:
    try:
        recipe = trainer.configure(apply_overrides(load_recipe(config.recipe), config.recipe_overrides()))
    except (RecipeError, DeviceUnavailableError) as error:
        # The launchpad's or the trainer's settings are wrong: say so on top, not as a stack trace.
        raise dg.Failure(f"training/sft_checkpoint: {error}") from None
    store = lake.lake()
    dataset = recipe.dataset
    version = dataset.table_version if dataset.table_version is not None else store.version(EXAMPLES)
    if version < 0:
        raise dg.Failure(f"recipe {recipe.name} trains on {dataset.name}/{dataset.split}, but no dataset has been "
                         f"loaded yet ({EXAMPLES.path} does not exist): run dataset_ingest_job for partition "
                         f"{dataset.name!r} first")
    rows = store.read(EXAMPLES, where={"dataset": dataset.name, "split": dataset.split}, version=version)
    if rows.empty:
        loaded = store.read(EXAMPLES, columns=["dataset", "split"], version=version).drop_duplicates()
        held = ", ".join(sorted(f"{r.dataset}/{r.split}" for r in loaded.itertuples())) or "none"
        raise dg.Failure(f"recipe {recipe.name} trains on {dataset.name}/{dataset.split}, but {EXAMPLES.path} "
                         f"(version {version}) has no such rows; it holds {held}. Run dataset_ingest_job for "
                         f"{dataset.name!r}, or pick a loaded one with overrides "
                         '{"dataset.name": ..., "dataset.split": ...}')
    rows = rows.sort_values("example_id").head(dataset.limit) if dataset.limit else rows
    run_id = config.resume_run_id or f"sft-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    started = pd.Timestamp.now(tz="UTC")
    outcome = run_sft_recipe(recipe, rows, lake.artifact_dir("runs", run_id),
                             make_backend=trainer.backend_factory(recipe), resume=bool(config.resume_run_id))
    store_quarantined(store, quarantine_rows("training/sft_input", (
        ({"example_id": r.example_id}, f"{dataset.name}/{dataset.split}@v{version}", r.reason)
        for r in outcome.rejected)))
    run = {
        "run_id": run_id, "method": recipe.method, "recipe_name": recipe.name, "recipe_hash": recipe_hash(recipe),
        "base_model": recipe.base_model.name_or_path or f"tiny-{recipe.base_model.tiny.family}",
        "dataset": dataset.name, "dataset_version": version, "trigger_reason": config.trigger_reason,
        "data_window": f"{config.data_window_start}..{config.data_window_end}".strip("."),
        "steps": outcome.steps, "final_loss": outcome.final_loss, "tokens_per_second": outcome.tokens_per_second,
        "checkpoint_uri": outcome.checkpoint_dir, "started_at": started, "finished_at": pd.Timestamp.now(tz="UTC"),
    }
    stored_run, stored_metrics = record_run(store, run, outcome.history)
    context.log.info("run %s: %d steps, final loss %s", run_id, outcome.steps, outcome.final_loss)
    return dg.MaterializeResult(metadata={
        **outcome.dagster_metadata, **table_metadata(stored_run), "run_id": run_id,
        "checkpoint": dg.MetadataValue.path(outcome.checkpoint_dir), "recipe": recipe.name,
        "recipe_hash": run["recipe_hash"], "base_model": run["base_model"],
        "dataset": f"{dataset.name}/{dataset.split}", "dataset_table_version": version,
        "train_examples": outcome.num_train, "eval_examples": outcome.num_eval,
        "rejected_examples": len(outcome.rejected), "resumed_from_step": outcome.resumed_from_step, "trigger_reason": config.trigger_reason,
        "data_window": run["data_window"], "metrics_rows": stored_metrics.accepted,
        "final_loss": outcome.final_loss, "tokens_per_second": outcome.tokens_per_second,
    })
