"""Training assets: a student checkpoint distilled from a teacher run, with its lineage, and its job."""

import dagster as dg
import pandas as pd
from pydantic import Field

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
from crucible.train.distill import VocabularyMismatchError, resolve_teacher, run_distill_recipe
from crucible.train.recipes import DistillSettings, RecipeError
from crucible.train.runs import record_run, run_lineage_edges
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

DistillOverrides = optional_overrides(DistillSettings, "DistillOverrides")


class DistillConfig(dg.Config):
    """Which distillation recipe to run, and what to change in it."""

    recipe: str = recipe_field("distill_tiny", "distill")
    distill: DistillOverrides = Field(default_factory=DistillOverrides,
                                      description="Distillation settings to override (e.g. loss, mode); unset = the recipe's.")
    hyperparameters: HyperparameterOverrides = Field(
        default_factory=HyperparameterOverrides,
        description="Recipe hyperparameters to override for this run (e.g. max_steps, learning_rate); unset = the recipe's.")
    dataset_limit: int | None = Field(None, ge=1,
                                      description="Use at most this many examples (recipe default when unset).")
    overrides: dict = Field(default_factory=dict, description="Any other recipe field by dotted key.")
    trigger_reason: str = Field("manual", description="Why this run was started (manual, drift, quality, curated_volume; a sensor sets it); recorded on the run row and its lineage.")

    def recipe_overrides(self) -> dict:
        chosen = {f"distill.{k}": v for k, v in self.distill.model_dump(exclude_none=True).items()}
        chosen |= {f"hyperparameters.{k}": v for k, v in self.hyperparameters.model_dump(exclude_none=True).items()}
        if self.dataset_limit is not None:
            chosen["dataset.limit"] = self.dataset_limit
        return {**chosen, **self.overrides}


@dg.asset(
    key=["training", "distilled_checkpoint"], pool=TRAINING_GPU_POOL, deps=[examples, sft_checkpoint], group_name="training",
    kinds={"pytorch", "huggingface", "deltalake"}, owners=["team:ml-platform"],
    description="Distils a teacher (by default the newest SFT run) into the recipe's smaller student on the "
                "recipe's dataset; records the run (method 'distill'), its metrics and lineage (teacher "
                "-[distilled_from]-> run, dataset@version -[trained_on]-> run).",
)
def distilled_checkpoint(context: dg.AssetExecutionContext, config: DistillConfig, lake: LakeResource,
                         trainer: TrainerResource) -> dg.MaterializeResult:
    store = lake.lake()
    try:
        recipe = configured_recipe(config, trainer, "distill")
        teacher = resolve_teacher(recipe.distill.teacher, store)
        dataset = recipe.dataset
        rows, version = select_rows(store, dataset.name, dataset.split, dataset.limit, dataset.table_version,
                                    recipe=recipe.name)
    except (RecipeError, DeviceUnavailableError, RowsNotLoadedError, LookupError, FileNotFoundError) as error:
        raise dg.Failure(f"training/distilled_checkpoint: {error}") from None
    run_id = new_run_id("distill")
    started = pd.Timestamp.now(tz="UTC")
    try:
        outcome = run_distill_recipe(recipe, rows, lake.artifact_dir("runs", run_id), teacher,
                                     trainer=trainer.settings())
    except VocabularyMismatchError as error:
        raise dg.Failure(f"training/distilled_checkpoint: {error}") from None
    quarantine_rejected(store, "distill", outcome.rejected, data_source(dataset.name, dataset.split, version))
    run = build_run_row(
        run_id, recipe, dataset=dataset.name, dataset_version=version, steps=outcome.steps,
        final_loss=outcome.final_loss, tokens_per_second=outcome.tokens_per_second,
        checkpoint_uri=outcome.checkpoint_dir, started_at=started, method="distill", base_model=outcome.student,
        trigger_reason=config.trigger_reason)
    stored_run, stored_metrics = record_run(store, run, outcome.history)
    edges = store_validated(store, LINEAGE_EDGES, run_lineage_edges(
        run_id, teacher.node, "distilled_from", dataset.name, version, created_by="training/distilled_checkpoint"),
        source=f"training run {run_id}")
    context.log.info("run %s: distilled %s into %s, eval KL %s -> %s", run_id, teacher.name, outcome.student,
                     outcome.eval_kl_before, outcome.eval_kl_after)
    return dg.MaterializeResult(metadata={
        **training_metadata(outcome.metric_summary), **run_record_metadata(stored_run), "run_id": run_id,
        "checkpoint": dg.MetadataValue.path(outcome.checkpoint_dir), "recipe": recipe.name,
        "recipe_hash": run["recipe_hash"], "student": outcome.student, "teacher": teacher.node,
        "teacher_run_id": teacher.run_id or "", "teacher_checkpoint": teacher.location,
        "loss": recipe.distill.loss, "mode": recipe.distill.mode, "dataset": f"{dataset.name}/{dataset.split}",
        "dataset_table_version": version, "train_examples": outcome.num_train, "eval_examples": outcome.num_eval,
        "rejected_examples": len(outcome.rejected), "eval_kl_before": metric(outcome.eval_kl_before),
        "eval_kl_after": metric(outcome.eval_kl_after), "final_loss": metric(outcome.final_loss),
        "tokens_per_second": metric(outcome.tokens_per_second), "metrics_rows": stored_metrics.accepted,
        "lineage_edges": edges.accepted, "trigger_reason": config.trigger_reason,
    })


distillation_workflow_job = dg.define_asset_job(
    "distillation_workflow_job", selection=dg.AssetSelection.assets(distilled_checkpoint),
    description="Distil the newest SFT run (or the teacher set in the launchpad) into a smaller student.",
)
