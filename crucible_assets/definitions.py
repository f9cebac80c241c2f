"""Every Crucible asset, check, job, sensor and resource, assembled into one Definitions object."""

import dagster as dg

from crucible_assets.datasets.assets import examples
from crucible_assets.datasets.checks import DATASET_CHECKS
from crucible_assets.datasets.sensors import dataset_drop_sensor
from crucible_assets.datasets.splits import splits, splits_reference_stored_examples
from crucible_assets.evaluation.assets import benchmark_results, eval_results, promotion_gate
from crucible_assets.feedback.assets import inference_events
from crucible_assets.jobs import daily_feedback_job, daily_feedback_schedule, dataset_ingest_job, retrain_job
from crucible_assets.monitoring.assets import drift_report
from crucible_assets.monitoring.sensors import drift_retraining_sensor
from crucible_assets.registry.assets import registered_model
from crucible_assets.registry.jobs import promote_model_job
from crucible_assets.registry.sensors import model_promotion_sensor
from crucible_assets.training.assets import sft_checkpoint
from crucible_assets.training.distill import distillation_workflow_job, distilled_checkpoint
from crucible_assets.training.dpo import dpo_checkpoint, preference_workflow_job
from crucible_assets.training.rl import reinforcement_workflow_job, rl_checkpoint
from resources.datasets import DatasetSourcesResource
from resources.evaluation import PromotionPolicyResource
from resources.lake import LakeResource
from resources.monitoring import DriftPolicyResource
from resources.registry import RegistryResource
from resources.trainer import TrainerResource


def default_resources() -> dict:
    """The embedded default: a local lake and drop folder under $CRUCIBLE_HOME, training in process."""
    return {
        "lake": LakeResource(),
        "dataset_sources": DatasetSourcesResource(),
        "trainer": TrainerResource(tinker_api_key=dg.EnvVar("TINKER_API_KEY").get_value()),
        "drift_policy": DriftPolicyResource(),
        "promotion_policy": PromotionPolicyResource(),
        "registry": RegistryResource(token=dg.EnvVar("CRUCIBLE_REGISTRY_TOKEN").get_value()),
    }


def build_defs(resources: dict | None = None) -> dg.Definitions:
    """The definitions with ``resources`` (tests pass a temporary lake); defaults otherwise."""
    return dg.Definitions(
        assets=[examples, splits, sft_checkpoint, dpo_checkpoint, rl_checkpoint, distilled_checkpoint, eval_results,
                benchmark_results, registered_model, inference_events, drift_report],
        asset_checks=[promotion_gate, *DATASET_CHECKS, splits_reference_stored_examples],
        jobs=[retrain_job, daily_feedback_job, dataset_ingest_job, promote_model_job, preference_workflow_job,
              reinforcement_workflow_job,
              distillation_workflow_job],
        schedules=[daily_feedback_schedule],
        sensors=[drift_retraining_sensor, dataset_drop_sensor, model_promotion_sensor],
        resources={**default_resources(), **(resources or {})},
    )


defs = build_defs()
