"""Resources of a temporary Crucible deployment for the monitoring asset and sensor tests."""

import dagster as dg
import pytest


@pytest.fixture
def resources(tmp_path) -> dict:
    from resources.embedder import EmbedderResource
    from resources.lake import LakeResource
    from resources.monitoring import DriftPolicyResource

    return {"lake": LakeResource(root=str(tmp_path / "lake"), artifacts_root=str(tmp_path / "artifacts")),
            "drift_policy": DriftPolicyResource(baseline_dataset="prompts", embedding_drift=False),
            "embedder": EmbedderResource()}


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance
