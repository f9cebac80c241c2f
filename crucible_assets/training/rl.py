"""RL asset: a GRPO-trained checkpoint from the newest SFT run (or a chosen one), with its run and lineage."""

import dagster as dg
import pandas as pd
from pydantic import Field

from crucible.quarantine import store_validated
from crucible.train.config import DeviceUnavailableError
from crucible.train.data import build_run_row, data_source, new_run_id, quarantine_rejected, select_rows
from crucible.train.recipes import RecipeError, RLSettings
from crucible.train.rl_pipeline import run_rl_recipe
from crucible.train.runs import parent_sft_run, record_run, run_lineage_edges
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import metric, run_record_metadata, training_metadata
from crucible_assets.training.assets import sft_checkpoint
from crucible_assets.training.config import (
    HyperparameterOverrides,
    configured_recipe,
    optional_overrides,
    recipe_field,
)
from resources.lake import LakeResource
from resources.trainer import TRAINING_GPU_POOL, TrainerResource
from schemas import LINEAGE_EDGES

RLOverrides = optional_overrides(RLSettings, "RLOverrides")


class RLConfig(dg.Config):
    """Which RL recipe to run, from which SFT run, and what to change in it."""

    recipe: str = recipe_field("rl_tiny_gsm8k", "rl")
    hyperparameters: HyperparameterOverrides = Field(
        default_factory=HyperparameterOverrides,
        description="Recipe hyperparameters to override for this run (e.g. max_steps, learning_rate); unset = the recipe's.")
    rl: RLOverrides = Field(default_factory=RLOverrides,
                            description="GRPO settings; rl.parent_run_id picks the SFT run (default: the newest).")
    dataset_limit: int | None = Field(None, ge=1, description="Use at most this many prompts (recipe default when unset).")
    overrides: dict = Field(default_factory=dict, description='Any other recipe field by dotted key, e.g. '
                                                              '{"rl.rewards": [{"kind": "gsm8k"}]}.')
    trigger_reason: str = Field("manual", description="Why this run was started (manual, drift, quality, curated_volume; a sensor sets it); recorded on the run row and its lineage.")

    def recipe_overrides(self) -> dict:
        chosen = {f"hyperparameters.{k}": v for k, v in self.hyperparameters.model_dump(exclude_none=True).items()}
        chosen |= {f"rl.{k}": v for k, v in self.rl.model_dump(exclude_none=True).items()}
        if self.dataset_limit is not None:
            chosen["dataset.limit"] = self.dataset_limit
        return {**chosen, **self.overrides}


@dg.asset(
    key=["training", "rl_checkpoint"], pool=TRAINING_GPU_POOL, deps=[sft_checkpoint, examples], group_name="training",
    kinds={"pytorch", "huggingface", "deltalake"}, owners=["team:ml-platform"],
    description="GRPO reinforcement learning from an SFT run's checkpoint with the recipe's rewards; saves a "
                "Hugging Face checkpoint and records the run (method rl), its metrics and its lineage.",
)
def rl_checkpoint(context: dg.AssetExecutionContext, config: RLConfig, lake: LakeResource,
                  trainer: TrainerResource) -> dg.MaterializeResult:
    try:
        recipe = configured_recipe(config, trainer, "rl")
        store = lake.lake()
        parent = parent_sft_run(store, recipe.rl.parent_run_id, "RL")
        dataset = recipe.dataset
        rows, version = select_rows(store, dataset.name, dataset.split, dataset.limit, dataset.table_version,
                                    recipe=recipe.name)
    except (RecipeError, DeviceUnavailableError, LookupError) as error:
        raise dg.Failure(f"training/rl_checkpoint: {error}") from None
    run_id, started = new_run_id("rl"), pd.Timestamp.now(tz="UTC")
    outcome = run_rl_recipe(recipe, rows, lake.artifact_dir("runs", run_id), init_checkpoint=parent["checkpoint_uri"],
                            trainer=trainer.settings())
    quarantine_rejected(store, "rl", outcome.rejected, data_source(dataset.name, dataset.split, version))
    run = build_run_row(run_id, recipe, dataset=dataset.name, dataset_version=version, steps=outcome.steps,
                        final_loss=outcome.final_loss, tokens_per_second=outcome.tokens_per_second,
                        checkpoint_uri=outcome.checkpoint_dir, started_at=started, base_model=parent["base_model"],
                        trigger_reason=config.trigger_reason)
    stored_run, stored_metrics = record_run(store, run, outcome.history)
    edges = store_validated(store, LINEAGE_EDGES, run_lineage_edges(
        run_id, f"run:{parent['run_id']}", "rl_trained_from", dataset.name, version,
        created_by="training/rl_checkpoint"), source=f"training run {run_id}")
    last = outcome.history[-1]
    context.log.info("run %s from %s: %d steps, reward %.3f", run_id, parent["run_id"], outcome.steps, last["reward_mean"])
    return dg.MaterializeResult(metadata={
        **training_metadata(outcome.metric_summary), **run_record_metadata(stored_run), "run_id": run_id, "parent_run_id": parent["run_id"],
        "checkpoint": dg.MetadataValue.path(outcome.checkpoint_dir), "recipe": recipe.name,
        "recipe_hash": run["recipe_hash"], "dataset": f"{dataset.name}/{dataset.split}", "dataset_table_version": version,
        "prompts": outcome.num_prompts, "rejected_prompts": len(outcome.rejected), "metrics_rows": stored_metrics.accepted,
        "lineage_edges": edges.accepted, "reward_mean_first": metric(outcome.history[0]["reward_mean"]),
        "reward_mean_last": metric(last["reward_mean"]), "completions_per_second": metric(outcome.completions_per_second),
        "tokens_per_second": metric(outcome.tokens_per_second),
    })


reinforcement_workflow_job = dg.define_asset_job(
    "reinforcement_workflow_job", selection=dg.AssetSelection.assets(rl_checkpoint),
    description="GRPO from the newest SFT checkpoint (or rl.parent_run_id) on the recipe's prompts and rewards.",
)
