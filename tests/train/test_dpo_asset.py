"""training/dpo_checkpoint on a real tiny lake: a preference file dropped in the drop folder is ingested, the
preference workflow job trains SFT then DPO from it, and the run, its metrics, its lineage and its reference
log-probs are stored; a second DPO run reuses those log-probs."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from crucible_assets.datasets.assets import examples
from crucible_assets.training.assets import sft_checkpoint
from crucible_assets.training.dpo import dpo_checkpoint, preference_workflow_job
from schemas import EXAMPLES, LINEAGE_EDGES, REFERENCE_LOGPROBS, TRAINING_METRICS, TRAINING_RUNS

PAIRS = 12


def resources(root) -> dict:
    from resources.datasets import DatasetSourcesResource
    from resources.lake import LakeResource
    from resources.trainer import TrainerResource

    return {"lake": LakeResource(root=str(root / "lake"), artifacts_root=str(root / "artifacts")),
            "dataset_sources": DatasetSourcesResource(drop_folder=str(root / "drop")),
            "trainer": TrainerResource()}


def drop_preferences(folder) -> None:
    """``prefs.jsonl`` of prompt/chosen/rejected lines, mapped by ``prefs.yaml`` (the documented convention)."""
    folder.mkdir(parents=True)
    lines = [{"id": f"p{n:02d}", "prompt": f"What is {n} plus {n}?", "chosen": f"{n} plus {n} is {2 * n}.",
              "rejected": f"I think it is {2 * n + 1}, or maybe not."} for n in range(PAIRS)]
    (folder / "prefs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "prefs.yaml").write_text("input: prompt\ntarget: chosen\nid: id\n")


def dpo_metadata(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("training__dpo_checkpoint")[0].metadata.items()}


@pytest.mark.slow
def test_preference_workflow_records_run_metrics_lineage_and_reuses_reference(tmp_path):
    drop_preferences(tmp_path / "drop")
    res = resources(tmp_path)
    defs = dg.Definitions(assets=[examples, sft_checkpoint, dpo_checkpoint], jobs=[preference_workflow_job],
                          resources=res)
    steps = {"max_steps": 3, "eval_every": 0, "checkpoint_every": 0}
    run_config = {"ops": {
        "training__sft_checkpoint": {"config": {"overrides": {"dataset.name": "prefs"}, "hyperparameters": steps}},
        "training__dpo_checkpoint": {"config": {"overrides": {"dataset.name": "prefs"},
                                                "hyperparameters": {"max_steps": 3}, "dpo": {"beta": 0.2}}},
    }}
    lake = res["lake"].lake()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("datasets", ["prefs"])
        assert dg.materialize([examples], partition_key="prefs", instance=instance, resources=res).success
        stored = lake.read(EXAMPLES, where={"dataset": "prefs"})
        assert len(stored) == PAIRS and "rejected" in json.loads(stored["metadata"].iloc[0])
        version = lake.version(EXAMPLES)

        result = defs.resolve_job_def(preference_workflow_job.name).execute_in_process(
            run_config=run_config, instance=instance)
        assert result.success
        first = dpo_metadata(result)

        runs = lake.read(TRAINING_RUNS).set_index("run_id")
        sft_run, dpo_run = runs[runs["method"] == "sft"].index[0], runs[runs["method"] == "dpo"].index[0]
        assert first["run_id"] == dpo_run and first["parent_run_id"] == sft_run
        assert runs.loc[dpo_run, "dataset"] == "prefs" and runs.loc[dpo_run, "dataset_version"] == version
        assert runs.loc[dpo_run, "steps"] == 3 and runs.loc[dpo_run, "checkpoint_uri"].endswith("final")
        edges = {(e.source, e.relation, e.target) for e in lake.read(LINEAGE_EDGES).itertuples()}
        assert {(f"run:{sft_run}", "dpo_trained_from", f"run:{dpo_run}"),
                (f"dataset:prefs@v{version}", "trained_on", f"run:{dpo_run}")} <= edges
        metrics = lake.read(TRAINING_METRICS, where={"run_id": dpo_run})
        assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "tokens_per_second"} <= set(metrics["name"])
        assert len(metrics[metrics["name"] == "rewards/accuracies"]) == 3
        assert (first["reference_computed"], first["reference_cached"], first["pairs"]) == (PAIRS, 0, PAIRS)
        references = lake.read(REFERENCE_LOGPROBS)
        assert len(references) == PAIRS and set(references["reference"]) == {f"run:{sft_run}"}
        assert set(references["dataset_version"]) == {version}

        again = dg.materialize([dpo_checkpoint], instance=instance, resources=res, selection=[dpo_checkpoint],
                               run_config={"ops": {"training__dpo_checkpoint": run_config["ops"][
                                   "training__dpo_checkpoint"]}})
        second = dpo_metadata(again)
    assert (second["reference_computed"], second["reference_cached"]) == (0, PAIRS)
    assert second["parent_run_id"] == sft_run and second["run_id"] != dpo_run
    assert len(lake.read(REFERENCE_LOGPROBS)) == PAIRS


def test_dpo_without_an_sft_run_fails_saying_what_to_run_first(tmp_path):
    res = resources(tmp_path)
    result = dg.materialize([dpo_checkpoint], resources=res, raise_on_error=False, selection=[dpo_checkpoint])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no SFT run in training/runs to start DPO from: materialize training/sft_checkpoint first" in \
        failure.step_failure_data.error.message


def test_a_pairs_table_outside_the_catalogue_is_refused_by_name(tmp_path):
    import pandas as pd

    from crucible.train.runs import record_run

    res = resources(tmp_path)
    now = pd.Timestamp.now(tz="UTC")
    record_run(res["lake"].lake(), {
        "run_id": "sft-1", "method": "sft", "recipe_name": "sft_tiny_gsm8k", "recipe_hash": "h", "base_model": "tiny",
        "dataset": "prefs", "dataset_version": 0, "trigger_reason": "manual", "data_window": "", "steps": 1,
        "final_loss": 1.0, "tokens_per_second": 1.0, "checkpoint_uri": str(tmp_path / "nowhere"), "started_at": now,
        "finished_at": now}, [])
    config = {"ops": {"training__dpo_checkpoint": {"config": {"dpo": {"pairs_table": "feedback/pairs_elsewhere"}}}}}
    result = dg.materialize([dpo_checkpoint], resources=res, raise_on_error=False, selection=[dpo_checkpoint],
                            run_config=config)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert ("recipe dpo_tiny: dpo.pairs_table 'feedback/pairs_elsewhere' is not a lake table (known: "
            "datasets/examples") in failure.step_failure_data.error.message
