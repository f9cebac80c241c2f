"""Training through Dagster Pipes: a real subprocess reports logs, metrics and the materialization; the
Kubernetes variant's GPU pod spec is validated by dagster-k8s's own pod builder."""

from pathlib import Path

import dagster as dg
import pytest

from crucible.train.runs import latest_run
from crucible_assets.datasets.assets import examples
from crucible_assets.training.pipes import (
    CHILD_MODULE,
    sft_checkpoint_external,
    sft_external_job,
    training_pod_spec,
    validate_pod_spec,
)
from resources.trainer import TRAINING_GPU_POOL


@pytest.mark.slow
def test_training_in_a_subprocess_reports_into_the_run(tmp_path, resources_for):
    resources = {**resources_for(tmp_path), "pipes_subprocess_client": dg.PipesSubprocessClient()}
    config = {"hyperparameters": {"max_steps": 3, "checkpoint_every": 0, "eval_every": 0}, "dataset_limit": 12}
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("datasets", ["gsm8k"])
        assert dg.materialize([examples], partition_key="gsm8k", instance=instance, resources=resources).success
        result = dg.materialize([sft_checkpoint_external], instance=instance, resources=resources,
                                run_config={"ops": {"training__sft_checkpoint_external": {"config": config}}},
                                selection=[sft_checkpoint_external])
        assert result.success
        messages = [event.user_message for event in instance.all_logs(result.run_id)]

    materialization = result.asset_materializations_for_node("training__sft_checkpoint_external")[0]
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    # From the child (reported through Pipes) ...
    assert metadata["trained_in"] == "external process (Dagster Pipes)" and metadata["steps"] == 3
    # ... and from the parent, which recorded the run on the lake.
    run = latest_run(resources["lake"].lake())
    assert run["run_id"] == metadata["run_id"] and run["steps"] == 3
    assert Path(metadata["checkpoint"]).joinpath("model.safetensors").exists()
    assert metadata["final_loss"] == pytest.approx(run["final_loss"])
    assert metadata["seconds/forward"] > 0 and "| backward |" in metadata["time_by_phase"]
    # The child's per-step metrics arrived in the run's event log as it trained.
    steps = [m for m in messages if m.startswith("step ")]
    assert [m.split(":")[0] for m in steps] == ["step 1", "step 2", "step 3"] and "loss=" in steps[0]


def test_the_external_asset_holds_a_gpu_slot_and_has_a_job(tmp_path, resources_for):
    assert sft_checkpoint_external.op.pool == TRAINING_GPU_POOL
    resources = {**resources_for(tmp_path), "pipes_subprocess_client": dg.PipesSubprocessClient()}
    defs = dg.Definitions(assets=[sft_checkpoint_external], jobs=[sft_external_job], resources=resources)
    assert defs.resolve_job_def(sft_external_job.name).graph.node_names() == ["training__sft_checkpoint_external"]


def test_the_k8s_pod_asks_for_gpus_and_validates():
    pytest.importorskip("dagster_k8s", reason="the PipesK8sClient check needs dagster-k8s==0.29.27 installed")
    spec = training_pod_spec(image="registry.example/crucible:1.0", gpus=2, node_selector={"gpu": "h100"},
                             artifacts_claim="crucible-artifacts")
    pod = validate_pod_spec(spec, env={"CRUCIBLE_LAKE_ROOT": "/crucible/lake"})
    container = pod.spec.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "2" == container.resources.requests["nvidia.com/gpu"]
    assert container.command == ["python", "-m", CHILD_MODULE] and pod.spec.restart_policy == "Never"
    assert {v.name for v in pod.spec.volumes} == {"dshm", "artifacts"}
    assert pod.spec.node_selector == {"gpu": "h100"} and pod.spec.tolerations[0].key == "nvidia.com/gpu"
    assert {e.name: e.value for e in container.env}["CRUCIBLE_LAKE_ROOT"] == "/crucible/lake"


def test_a_bad_pod_spec_is_refused_with_the_reason():
    pytest.importorskip("dagster_k8s", reason="the PipesK8sClient check needs dagster-k8s==0.29.27 installed")
    spec = training_pod_spec(image="i")
    with pytest.raises(ValueError, match="not a valid Kubernetes PodSpec.*tolerationz"):
        validate_pod_spec({**spec, "tolerationz": []})
    no_gpu = {**spec, "containers": [{**spec["containers"][0], "resources": {"limits": {"cpu": "4"}}}]}
    with pytest.raises(ValueError, match="container 'trainer' has no GPU limit"):
        validate_pod_spec(no_gpu)
    with pytest.raises(ValueError, match="at least one GPU"):
        training_pod_spec(image="i", gpus=0)
