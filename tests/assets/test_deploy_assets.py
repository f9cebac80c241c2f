"""Deployment on the Dagster side: lineage to the registered model, the rendered-manifests asset, the promotion
sensor starting deploy_job runs, the health sensor writing rows, and (slow) a real local rollout asset."""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from crucible.deploy.deployments import create_deployment, get_deployment, terminate_local, transition, update
from crucible.registry.registry import Registry
from crucible_assets.deploy.assets import local_deployment, rendered_deployment
from crucible_assets.deploy.jobs import deploy_job
from crucible_assets.registry.assets import registered_model
from resources.deploy import DeploymentResource
from schemas import DEPLOYMENT_HEALTH, DEPLOYMENTS
from tests.deploy.backends import Backend
from tests.deploy.tiny_model import ADMIN, make_tiny_checkpoint
from tests.registry.conftest import make_checkpoint


@pytest.fixture
def deployed(tmp_path, resources_for):
    """Resources on a temporary lake with two versions of ``tiny`` (fake weights), v1 in production."""
    resources = {**resources_for(tmp_path), "deployment": DeploymentResource(workdir=str(tmp_path / "deploy"),
                                                                            target="kubernetes", gpus=2)}
    lake = resources["lake"].lake()
    registry = Registry(lake, ADMIN)
    for seed in (1, 2):
        registry.register("tiny", {"checkpoint": make_checkpoint(tmp_path / f"ckpt-{seed}", seed)},
                          training_run_id=f"run-{seed}", dataset="gsm8k", dataset_version=1, stage="staging")
    registry.transition("tiny", 1, "production")
    return resources, lake, registry


def run_config(asset: dg.AssetsDefinition, ref: str = "production") -> dict:
    return {"ops": {asset.op.name: {"config": {"model_name": "tiny", "ref": ref}}}}


def test_deployment_assets_have_lineage_to_the_registered_model():
    from crucible_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for asset in (local_deployment, rendered_deployment):
        assert graph.get(asset.key).parent_keys == {registered_model.key}
    assert defs.resolve_job_def(deploy_job.name).asset_layer.executable_asset_keys == {local_deployment.key}


def test_the_manifests_asset_renders_the_production_version_for_kubernetes(deployed):
    resources, lake, _ = deployed
    result = dg.materialize([rendered_deployment], resources=resources, run_config=run_config(rendered_deployment))
    metadata = result.asset_materializations_for_node(rendered_deployment.op.name)[0].metadata
    path = metadata["path"].value
    text = open(path).read()
    assert path.endswith("tiny-v1.yaml") and "kind: Deployment" in text and "nvidia.com/gpu: 2" in text
    assert "path: /readyz" in text and "crucible/version: '1'" in text
    row = get_deployment(lake, metadata["deployment_id"].value)
    assert (row.state, row.target, row.model_version) == ("pending", "kubernetes", 1)
    assert row.reason == f"rendered, not run here: kubectl apply -f {path}"


def test_a_manifest_kubernetes_would_refuse_fails_the_asset_with_the_reason(deployed):
    resources, lake, _ = deployed
    resources = {**resources, "deployment": DeploymentResource(target="kubernetes", namespace="Bad_Namespace",
                                                               workdir=resources["deployment"].workdir)}
    with pytest.raises(dg.Failure, match="deployment/manifests: kubernetes Deployment tiny-v1: at metadata/namespace"):
        dg.materialize([rendered_deployment], resources=resources, run_config=run_config(rendered_deployment))
    assert lake.read(DEPLOYMENTS).empty  # nothing recorded for a refused render


def test_an_unknown_version_fails_with_the_registrys_reason(deployed):
    resources, _, _ = deployed
    with pytest.raises(dg.Failure, match="model 'tiny' has no version 9"):
        dg.materialize([rendered_deployment], resources=resources, run_config=run_config(rendered_deployment, "9"))


def test_a_promotion_to_production_requests_one_deploy_run_of_that_version(deployed):
    from crucible_assets.definitions import build_defs

    resources, _, registry = deployed
    defs = build_defs(resources)
    sensor = defs.get_sensor_def("deployment_promotion_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=resources)
        first = sensor.evaluate_tick(context)
        assert [r.run_config for r in first.run_requests] == [run_config(local_deployment, "1")]  # the fixture's
        event = registry.transition("tiny", 2, "production")
        context = dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs,
                                          resources=resources)
        data = sensor.evaluate_tick(context)
        [request] = data.run_requests
        assert request.job_name == deploy_job.name and request.run_key == f"promote-{event.event_id}"
        assert request.run_config == run_config(local_deployment, "2")
        assert dg.validate_run_config(defs.resolve_job_def(deploy_job.name), request.run_config)
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=data.cursor, definitions=defs,
                                                             resources=resources))
        assert not again.run_requests


def test_the_health_sensor_probes_live_deployments_and_writes_rows(deployed):
    from crucible_assets.definitions import build_defs

    resources, lake, _ = deployed
    defs = build_defs(resources)
    sensor = defs.get_sensor_def("deployment_health_sensor")

    def tick():
        with dg.DagsterInstance.ephemeral() as instance:
            return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                                resources=resources))

    assert tick().skip_message == "no live local deployments"
    with Backend("v1") as healthy:
        ids = {}
        for name, url, state in (("up", healthy.url, "active"), ("down", "http://127.0.0.1:9", "canary"),
                                 ("gone", healthy.url, "rolled_back")):
            created = create_deployment(lake, model_name="tiny", model_version=1, target="local", strategy="canary",
                                        artifact_uri="/x")
            for step in {"active": ["deploying", "active"], "canary": ["deploying", "canary"],
                         "rolled_back": ["deploying", "rolling_back", "rolled_back"]}[state]:
                transition(lake, created.deployment_id, step)
            update(lake, created.deployment_id, backend_url=url)
            ids[name] = created.deployment_id
        result = tick()
    assert result.skip_message == "probed 2 deployment(s), 1 not ready"
    rows = lake.read(DEPLOYMENT_HEALTH).set_index("deployment_id")
    assert set(rows.index) == {ids["up"], ids["down"]}  # the rolled-back one is not probed
    assert rows.loc[ids["up"], "ready"] and rows.loc[ids["up"], "latency_ms"] >= 0
    assert not rows.loc[ids["down"], "live"] and "Connection" in rows.loc[ids["down"], "error"]
    assert {e.asset_key for e in result.asset_events} == {local_deployment.key}


@pytest.mark.slow
def test_the_local_deployment_asset_serves_a_registered_version_behind_its_router(tmp_path, resources_for):
    resources = {**resources_for(tmp_path), "deployment": DeploymentResource(
        workdir=str(tmp_path / "deploy"), strategy="replace", serve_args=["--no-events"], ready_timeout_s=120)}
    lake = resources["lake"].lake()
    registry = Registry(lake, ADMIN)
    registry.register("tiny", {"checkpoint": make_tiny_checkpoint(tmp_path / "ckpt")}, training_run_id="run-1",
                      dataset="gsm8k", dataset_version=1, stage="staging")
    registry.transition("tiny", 1, "production")
    result = dg.materialize([local_deployment], resources=resources, run_config=run_config(local_deployment))
    metadata = result.asset_materializations_for_node(local_deployment.op.name)[0].metadata
    deployment = get_deployment(lake, metadata["deployment_id"].value)
    try:
        assert (deployment.state, deployment.traffic_percent, metadata["state"].value) == ("active", 100, "active")
        answer = httpx.post(f"{deployment.endpoint}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200 and answer.headers["X-Crucible-Backend"] == deployment.deployment_id
    finally:
        terminate_local(lake, deployment.deployment_id, resources["deployment"].local_target())
