"""training/rl_checkpoint through a real materialize on a tiny lake: refused without an SFT run, then trained
from the newest SFT run, recording its run (method rl), metrics and lineage edges."""

import dagster as dg
import pytest

pytestmark = pytest.mark.slow  # an SFT run and an RL run through Dagster: ~30 s on two busy cores


@pytest.fixture
def resources(tmp_path):
    from resources.datasets import DatasetSourcesResource
    from resources.lake import LakeResource
    from resources.trainer import TrainerResource

    return {"lake": LakeResource(root=str(tmp_path / "lake"), artifacts_root=str(tmp_path / "artifacts")),
            "dataset_sources": DatasetSourcesResource(drop_folder=str(tmp_path / "drop")),
            "trainer": TrainerResource()}


def test_rl_checkpoint_trains_from_the_newest_sft_run_and_records_lineage(resources):
    from crucible.inference import InferenceEngine
    from crucible_assets.datasets.assets import examples
    from crucible_assets.training.assets import sft_checkpoint
    from crucible_assets.training.rl import reinforcement_workflow_job, rl_checkpoint
    from schemas import LINEAGE_EDGES, TRAINING_METRICS, TRAINING_RUNS

    defs = dg.Definitions(assets=[examples, sft_checkpoint, rl_checkpoint], jobs=[reinforcement_workflow_job],
                          resources=resources)
    job = defs.resolve_job_def(reinforcement_workflow_job.name)
    rl_config = {"ops": {"training__rl_checkpoint": {"config": {
        "hyperparameters": {"max_steps": 2}, "rl": {"group_size": 2, "max_new_tokens": 8}, "dataset_limit": 4,
        "overrides": {"logging": [{"kind": "dagster", "plot": False}]}}}}}
    lake = resources["lake"].lake()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("datasets", ["gsm8k"])
        assert dg.materialize([examples], partition_key="gsm8k", instance=instance, resources=resources).success

        refused = job.execute_in_process(instance=instance, run_config=rl_config, raise_on_error=False)
        assert not refused.success
        failure = refused.failure_data_for_node("training__rl_checkpoint")
        assert "no SFT run" in failure.error.message and "sft_checkpoint" in failure.error.message

        sft_config = {"ops": {"training__sft_checkpoint": {"config": {
            "hyperparameters": {"max_steps": 2, "eval_every": 0, "checkpoint_every": 0}, "dataset_limit": 8}}}}
        assert dg.materialize([sft_checkpoint], instance=instance, resources=resources, run_config=sft_config,
                              selection=[sft_checkpoint]).success
        result = job.execute_in_process(instance=instance, run_config=rl_config)
    assert result.success
    metadata = result.asset_materializations_for_node("training__rl_checkpoint")[0].metadata
    runs = lake.read(TRAINING_RUNS).set_index("run_id")
    sft_id = runs.index[runs["method"] == "sft"][0]
    rl_id = metadata["run_id"].value
    rl_run = runs.loc[rl_id]
    assert rl_run["method"] == "rl" and rl_run["steps"] == 2 and rl_run["recipe_name"] == "rl_tiny_gsm8k"
    assert metadata["parent_run_id"].value == sft_id and metadata["prompts"].value == 4
    # The run's metric summary is rendered the way every training asset renders it (training_metadata).
    assert metadata["final/reward_mean"].value == pytest.approx(metadata["reward_mean_last"].value)
    assert metadata["last_step"].value == 2 and "reward_mean" in metadata["metrics_table"].value
    version = int(rl_run["dataset_version"])

    metrics = lake.read(TRAINING_METRICS, where={"run_id": rl_id})
    names = set(metrics["name"])
    assert {"reward_mean", "reward_std", "reward/gsm8k", "reward/format", "kl", "entropy", "clip_fraction",
            "completion_length", "tokens_per_second"} <= names
    assert sorted(metrics["step"].unique()) == [1, 2]

    edges = lake.read(LINEAGE_EDGES)
    found = {(e.source, e.relation, e.target) for e in edges.itertuples()}
    assert (f"run:{sft_id}", "rl_trained_from", f"run:{rl_id}") in found
    assert (f"dataset:gsm8k@v{version}", "trained_on", f"run:{rl_id}") in found

    # The checkpoint serves with the chat format its runs trained in.
    engine = InferenceEngine.from_checkpoint(rl_run["checkpoint_uri"])
    assert engine.renderer is not None and engine.renderer.name == "chatml"
    assert engine.chat(["2+2?"], max_new_tokens=3)[0].completion_tokens >= 1
