"""A whole lifecycle run into a temporary lake and Dagster instance, shared by the asset tests."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@dataclass
class Lifecycle:
    instance: dg.DagsterInstance
    defs: dg.Definitions
    resources: dict
    lake: object
    produced: dict
    log: list[str]
    days: list[str]


def make_resources(root: Path) -> dict:
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

    return {
        "lake": LakeResource(root=str(root / "lake"), artifacts_root=str(root / "artifacts")),
        "dataset_sources": DatasetSourcesResource(drop_folder=str(root / "drop")),
        "trainer": TrainerResource(),
        "drift_policy": DriftPolicyResource(),
        "feedback": FeedbackResource(inbox=str(root / "feedback_inbox")),
        "embedder": EmbedderResource(),
        "deployment": DeploymentResource(workdir=str(root / "deployments")),
        "alerts": AlertsResource(),
        "promotion_policy": PromotionPolicyResource(),
        "registry": RegistryResource(artifact_store=str(root / "registry_artifacts"),
                                     token_file=str(root / "registry_token")),
    }


@pytest.fixture(scope="session")
def resources_for():
    """Builds the resources of a Crucible deployment rooted in a given (temporary) folder."""
    return make_resources


@pytest.fixture(scope="session")
def lifecycle(tmp_path_factory) -> Lifecycle:
    """Datasets → training → evaluation → registry → 3 days of feedback (drift planted on the last)
    → drift sensor → the retraining it requested, all through the real jobs on a real instance."""
    from crucible_assets.definitions import build_defs
    from crucible_assets.demo import run_lifecycle

    root = tmp_path_factory.mktemp("lifecycle")
    resources = make_resources(root)
    defs = build_defs(resources)
    log: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        produced = run_lifecycle(DAYS, DAYS[-1], instance, defs, resources, echo=log.append)
        yield Lifecycle(instance, defs, resources, resources["lake"].lake(), produced, log, DAYS)
