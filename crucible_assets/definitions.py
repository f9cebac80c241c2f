"""Every Crucible asset, check, job, sensor and resource, assembled into one Definitions object."""

import dagster as dg

from crucible_assets.datasets.assets import examples
from crucible_assets.datasets.checks import DATASET_CHECKS
from crucible_assets.datasets.sensors import dataset_drop_sensor
from crucible_assets.datasets.splits import splits, splits_reference_stored_examples
from crucible_assets.deploy.assets import local_deployment, rendered_deployment
from crucible_assets.deploy.jobs import deploy_job
from crucible_assets.deploy.sensors import deployment_health_sensor, deployment_promotion_sensor
from crucible_assets.evaluation.assets import benchmark_results, eval_results, promotion_gate
from crucible_assets.executors import configured_executor
from crucible_assets.feedback.assets import inference_events, signals
from crucible_assets.feedback.curation import curated_examples, preference_pairs
from crucible_assets.feedback.ingest import feedback_inbox_sensor, feedback_ingest_job
from crucible_assets.feedback.quality import embeddings, quality
from crucible_assets.jobs import (
    daily_feedback_job,
    daily_feedback_schedule,
    dataset_ingest_job,
    feedback_export_job,
    refresh_baseline_job,
    retrain_job,
)
from crucible_assets.monitoring.assets import baseline, drift_report
from crucible_assets.monitoring.sensors import (
    baseline_promotion_sensor,
    curated_volume_retraining_sensor,
    drift_retraining_sensor,
    quality_retraining_sensor,
)
from crucible_assets.operations import run_failure_alerts
from crucible_assets.registry.assets import registered_model
from crucible_assets.registry.jobs import promote_model_job
from crucible_assets.registry.sensors import model_promotion_sensor
from crucible_assets.training.assets import sft_checkpoint
from crucible_assets.training.distill import distillation_workflow_job, distilled_checkpoint
from crucible_assets.training.dpo import dpo_checkpoint, preference_workflow_job
from crucible_assets.training.pipes import sft_checkpoint_external, sft_external_job
from crucible_assets.training.rl import reinforcement_workflow_job, rl_checkpoint
from resources.alerts import AlertsResource
from resources.datasets import DatasetSourcesResource
from resources.deploy import DeploymentResource
from resources.embedder import EmbedderResource
from resources.evaluation import PromotionPolicyResource
from resources.feedback import FeedbackResource
from resources.lake import LakeResource
from resources.monitoring import DriftPolicyResource
from resources.registry import RegistryResource
from resources.trainer import TrainerResource


def default_resources() -> dict:
    """The embedded default: a local lake and drop folder under $CRUCIBLE_HOME, training in process."""
    return {
        "lake": LakeResource(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "alerts": AlertsResource(webhook_url=dg.EnvVar("CRUCIBLE_ALERT_WEBHOOK").get_value(),
                                 dagster_url=dg.EnvVar("CRUCIBLE_DAGSTER_URL").get_value()),
        "dataset_sources": DatasetSourcesResource(),
        "trainer": TrainerResource(tinker_api_key=dg.EnvVar("TINKER_API_KEY").get_value()),
        "drift_policy": DriftPolicyResource(),
        "deployment": DeploymentResource(),
        "embedder": EmbedderResource(),
        "feedback": FeedbackResource(),
        "promotion_policy": PromotionPolicyResource(),
        "registry": RegistryResource(token=dg.EnvVar("CRUCIBLE_REGISTRY_TOKEN").get_value()),
    }


def build_defs(resources: dict | None = None) -> dg.Definitions:
    """The definitions with ``resources`` (tests pass a temporary lake); defaults otherwise."""
    return dg.Definitions(
        assets=[examples, splits, sft_checkpoint, dpo_checkpoint, rl_checkpoint, distilled_checkpoint, eval_results,
                benchmark_results, registered_model, inference_events, signals, baseline, drift_report, quality,
                embeddings,
                curated_examples, preference_pairs, local_deployment, rendered_deployment, sft_checkpoint_external],
        asset_checks=[promotion_gate, *DATASET_CHECKS, splits_reference_stored_examples],
        jobs=[retrain_job, refresh_baseline_job, daily_feedback_job, dataset_ingest_job, promote_model_job,
              preference_workflow_job, reinforcement_workflow_job,
              distillation_workflow_job, deploy_job, feedback_ingest_job, feedback_export_job,
              sft_external_job],
        schedules=[daily_feedback_schedule],
        sensors=[run_failure_alerts, feedback_inbox_sensor,
                 drift_retraining_sensor, quality_retraining_sensor, curated_volume_retraining_sensor,
                 baseline_promotion_sensor, dataset_drop_sensor, model_promotion_sensor, deployment_promotion_sensor,
                 deployment_health_sensor],
        resources={**default_resources(), **(resources or {})},
        executor=configured_executor(),
    )


defs = build_defs()
