"""Preference training: a DPO checkpoint from the newest SFT checkpoint and preference pairs, and its job."""

import dagster as dg
import pandas as pd
from pydantic import Field

import schemas
from crucible.quarantine import store_validated
from crucible.train.config import DeviceUnavailableError
from crucible.train.data import (
    RowsNotLoadedError,
    build_run_row,
    data_source,
    new_run_id,
    quarantine_rejected,
    select_rows,
)
from crucible.train.dpo_pipeline import ReferenceKey, run_dpo_recipe
from crucible.train.recipes import DPOSettings, RecipeError
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

DPOOverrides = optional_overrides(DPOSettings, "DPOOverrides")


class DPOConfig(dg.Config):
    """Which recipe to run, what to change in it, and which SFT run to start from."""

    recipe: str = recipe_field("dpo_tiny", "dpo")
    hyperparameters: HyperparameterOverrides = Field(
        default_factory=HyperparameterOverrides,
        description="Recipe hyperparameters to override for this run (e.g. max_steps, learning_rate); unset = the recipe's.")
    dpo: DPOOverrides = Field(default_factory=DPOOverrides,
                             description="DPO settings to override (e.g. beta); unset = the recipe's.")
    dataset_limit: int | None = Field(None, ge=1, description="Use at most this many pairs (recipe default when unset).")
    overrides: dict = Field(default_factory=dict, description='Any other recipe field by dotted key, e.g. '
                                                              '{"dataset.name": "my-prefs"}.')
    parent_run_id: str = Field("", description="SFT run to start from; empty = the recipe's, else the newest SFT run.")
    trigger_reason: str = Field("manual", description="Why this run was started (manual, drift, quality, curated_volume; a sensor sets it); recorded on the run row and its lineage.")

    def recipe_overrides(self) -> dict:
        chosen = {f"hyperparameters.{k}": v for k, v in self.hyperparameters.model_dump(exclude_none=True).items()}
        chosen |= {f"dpo.{k}": v for k, v in self.dpo.model_dump(exclude_none=True).items()}
        if self.parent_run_id:
            chosen["dpo.parent_run_id"] = self.parent_run_id
        if self.dataset_limit is not None:
            chosen["dataset.limit"] = self.dataset_limit
        return {**chosen, **self.overrides}


def _pairs_source(store, recipe) -> tuple[pd.DataFrame, str, str, int]:
    """The rows holding the recipe's pairs, with the (dataset, split, version) they are read at."""
    data, table = recipe.dataset, recipe.dpo.pairs_table
    if not table:
        rows, version = select_rows(store, data.name, data.split, data.limit, data.table_version, recipe=recipe.name)
        return rows, data.name, data.split, version
    # A pairs table (feedback/preference_pairs, once it exists): any catalogued table with the pair columns.
    spec = next((s for s in schemas.ALL_TABLES if s.path == table), None)
    if spec is None:
        raise RowsNotLoadedError(f"recipe {recipe.name}: dpo.pairs_table {table!r} is not a lake table (known: "
                                 f"{', '.join(s.path for s in schemas.ALL_TABLES)})", table, None, -1)
    version = data.table_version if data.table_version is not None else store.version(spec)
    if version < 0:
        raise RowsNotLoadedError(f"recipe {recipe.name} trains on {table}, which does not exist yet", table, None,
                                 version)
    rows = store.read(spec, version=version)
    rows = rows.sort_values("pair_id") if "pair_id" in rows.columns else rows
    return (rows.head(data.limit) if data.limit else rows), table, "all", version


@dg.asset(
    key=["training", "dpo_checkpoint"], pool=TRAINING_GPU_POOL, deps=[sft_checkpoint, examples], group_name="training",
    kinds={"pytorch", "huggingface", "deltalake"}, owners=["team:ml-platform"],
    description="DPO of an SFT checkpoint (the newest, or a chosen run) on preference pairs; reference log-probs "
                "are computed once per (checkpoint, data version) and stored. Records the run, its metrics "
                "and lineage (parent run -[dpo_trained_from]-> run, dataset@version -[trained_on]-> run).",
)
def dpo_checkpoint(context: dg.AssetExecutionContext, config: DPOConfig, lake: LakeResource,
                   trainer: TrainerResource) -> dg.MaterializeResult:
    try:
        recipe = configured_recipe(config, trainer, "dpo")
        store = lake.lake()
        parent = parent_sft_run(store, recipe.dpo.parent_run_id, "DPO")
        rows, dataset, split, version = _pairs_source(store, recipe)
    except (RecipeError, DeviceUnavailableError, LookupError) as error:  # RowsNotLoadedError is a LookupError
        raise dg.Failure(f"training/dpo_checkpoint: {error}") from None
    run_id = new_run_id("dpo")
    started = pd.Timestamp.now(tz="UTC")
    try:
        outcome = run_dpo_recipe(recipe, rows, lake.artifact_dir("runs", run_id),
                                 start_checkpoint=parent["checkpoint_uri"], lake=store,
                                 reference_key=ReferenceKey(f"run:{parent['run_id']}", dataset, split, version))
    except ValueError as error:
        raise dg.Failure(f"training/dpo_checkpoint: {error}") from None
    quarantine_rejected(store, "dpo", outcome.rejected, data_source(dataset, split, version), key="pair_id")
    run = build_run_row(run_id, recipe, dataset=dataset, dataset_version=version, steps=outcome.steps,
                        final_loss=outcome.final_loss, tokens_per_second=outcome.tokens_per_second,
                        checkpoint_uri=outcome.checkpoint_dir, started_at=started, base_model=parent["base_model"],
                        trigger_reason=config.trigger_reason)
    stored_run, stored_metrics = record_run(store, run, outcome.history)
    store_validated(store, LINEAGE_EDGES, run_lineage_edges(run_id, f"run:{parent['run_id']}", "dpo_trained_from",
                                                            dataset, version, created_by="training/dpo_checkpoint"),
                    source=run_id)
    final = outcome.history[-1] if outcome.history else {}
    context.log.info("run %s from %s: %d steps, final loss %s", run_id, parent["run_id"], outcome.steps,
                     outcome.final_loss)
    return dg.MaterializeResult(metadata={
        **training_metadata(outcome.metric_summary), **run_record_metadata(stored_run), "run_id": run_id,
        "parent_run_id": parent["run_id"],
        "checkpoint": dg.MetadataValue.path(outcome.checkpoint_dir), "recipe": recipe.name,
        "recipe_hash": run["recipe_hash"], "dataset": f"{dataset}/{split}", "dataset_table_version": version,
        "pairs": outcome.num_pairs, "rejected_pairs": len(outcome.rejected), "loss_type": recipe.dpo.loss_type,
        "beta": recipe.dpo.beta, "reference": recipe.dpo.reference, "reference_cached": outcome.reference_cached,
        "reference_computed": outcome.reference_computed, "metrics_rows": stored_metrics.accepted,
        "final_loss": metric(outcome.final_loss), "tokens_per_second": metric(outcome.tokens_per_second),
        "pairs_per_second": outcome.pairs_per_second,
        "final_reward_accuracy": final.get("rewards/accuracies"), "final_reward_margin": final.get("rewards/margins"),
    })


preference_workflow_job = dg.define_asset_job(
    "preference_workflow_job", selection=dg.AssetSelection.assets(sft_checkpoint, dpo_checkpoint),
    description="Supervised fine-tuning, then DPO from that checkpoint on preference pairs.",
)
