"""training/distilled_checkpoint materialized for real: teacher = the newest SFT run, lineage on the lake."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from crucible.train.distill import LATEST_SFT, resolve_teacher
from crucible.train.runs import record_run
from crucible_assets.datasets.assets import examples
from crucible_assets.training.assets import sft_checkpoint
from crucible_assets.training.distill import distillation_workflow_job, distilled_checkpoint
from schemas import LINEAGE_EDGES, TRAINING_METRICS, TRAINING_RUNS
from tests.assets.conftest import make_resources

FAST = {"hyperparameters": {"max_steps": 3, "eval_every": 0, "checkpoint_every": 0}, "dataset_limit": 16}


def run_row(run_id: str, method: str, finished: str) -> dict:
    at = pd.Timestamp(finished, tz="UTC")
    return {"run_id": run_id, "method": method, "recipe_name": "r", "recipe_hash": "h", "base_model": "tiny-llama",
            "dataset": "gsm8k", "dataset_version": 0, "trigger_reason": "manual", "data_window": "", "steps": 1,
            "final_loss": 1.0, "tokens_per_second": 1.0, "checkpoint_uri": f"/ckpt/{run_id}", "started_at": at,
            "finished_at": at}


def test_latest_sft_teacher_is_the_newest_sft_run_not_the_newest_run(lake):
    for run_id, method, finished in [("sft-old", "sft", "2026-11-01"), ("sft-new", "sft", "2026-11-02"),
                                     ("dpo-newer", "dpo", "2026-11-03")]:
        record_run(lake, run_row(run_id, method, finished), [])
    teacher = resolve_teacher(LATEST_SFT, lake)
    assert (teacher.run_id, teacher.location, teacher.node) == ("sft-new", "/ckpt/sft-new", "run:sft-new")
    assert resolve_teacher("sft-old", lake).node == "run:sft-old"
    assert resolve_teacher("HuggingFaceTB/SmolLM2-135M", lake).node == "base:HuggingFaceTB/SmolLM2-135M"
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve_teacher("./missing/final", lake)


def test_without_an_sft_run_the_asset_fails_saying_what_to_run_first(tmp_path):
    result = dg.materialize([distilled_checkpoint], resources=make_resources(tmp_path), raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("training__distilled_checkpoint").error.message
    assert "no SFT run in training/runs" in failure and "materialize training/sft_checkpoint first" in failure


@pytest.mark.slow  # ingests GSM8K, trains a teacher and a student through Dagster: ~15 s idle
def test_distilled_checkpoint_records_its_run_metrics_and_lineage(tmp_path):
    from transformers import AutoModelForCausalLM

    resources = make_resources(tmp_path)
    lake = resources["lake"].lake()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("datasets", ["gsm8k"])
        assert dg.materialize([examples], partition_key="gsm8k", instance=instance, resources=resources).success
        sft_config = {"ops": {"training__sft_checkpoint": {"config": FAST}}}
        assert dg.materialize([sft_checkpoint], instance=instance, resources=resources, run_config=sft_config).success
        teacher = lake.read(TRAINING_RUNS).iloc[0]
        config = {"ops": {"training__distilled_checkpoint": {"config": {**FAST, "distill": {"loss": "forward_kl"}}}}}
        result = dg.materialize([distilled_checkpoint], instance=instance, resources=resources, run_config=config)
    assert result.success
    metadata = result.asset_materializations_for_node("training__distilled_checkpoint")[0].metadata
    run_id = metadata["run_id"].value

    runs = lake.read(TRAINING_RUNS).set_index("run_id")
    run = runs.loc[run_id]
    assert (run["method"], run["recipe_name"], run["steps"]) == ("distill", "distill_tiny", 3)
    assert run["base_model"] == "tiny-llama" and run["dataset"] == "gsm8k"
    student = AutoModelForCausalLM.from_pretrained(run["checkpoint_uri"])
    teacher_model = AutoModelForCausalLM.from_pretrained(teacher["checkpoint_uri"])
    assert student.config.hidden_size == 32 < teacher_model.config.hidden_size
    assert student.config.vocab_size == teacher_model.config.vocab_size

    metrics = lake.read(TRAINING_METRICS, where={"run_id": run_id})
    assert set(metrics["step"]) == {0, 1, 2, 3} and {"loss", "divergence", "eval_kl"} <= set(metrics["name"])
    kl = metrics[metrics["name"] == "eval_kl"].set_index("step")["value"]
    assert list(kl.index.sort_values()) == [0, 3] and kl[3] < kl[0]

    edges = lake.read(LINEAGE_EDGES)
    mine = edges[edges["target"] == f"run:{run_id}"]
    assert set(zip(mine["source"], mine["relation"], strict=True)) == {
        (f"run:{teacher['run_id']}", "distilled_from"),
        (f"dataset:gsm8k@v{run['dataset_version']}", "trained_on"),
    }
    assert metadata["teacher_run_id"].value == teacher["run_id"] and metadata["loss"].value == "forward_kl"
    assert metadata["eval_kl_after"].value < metadata["eval_kl_before"].value


def test_the_workflow_job_selects_the_distilled_checkpoint(tmp_path):
    defs = dg.Definitions(assets=[examples, sft_checkpoint, distilled_checkpoint], jobs=[distillation_workflow_job],
                          resources=make_resources(tmp_path))
    job = defs.resolve_job_def(distillation_workflow_job.name)
    assert job.asset_layer.executable_asset_keys == {distilled_checkpoint.key}
    ops = job.run_config_schema.config_type.fields["ops"].config_type
    config = ops.fields["training__distilled_checkpoint"].config_type.fields["config"].config_type
    assert {"teacher", "loss", "beta", "temperature", "alpha", "mode", "max_new_tokens"} == set(
        config.fields["distill"].config_type.fields)


def test_launchpad_distill_settings_override_the_recipe_and_are_revalidated():
    from crucible.train.recipes import RecipeError, apply_overrides, load_recipe
    from crucible_assets.training.distill import DistillConfig

    config = DistillConfig(distill={"teacher": "sft-123", "mode": "on_policy", "beta": 0.9},
                           hyperparameters={"max_steps": 2}, dataset_limit=8)
    recipe = apply_overrides(load_recipe(config.recipe), config.recipe_overrides())
    assert (recipe.distill.teacher, recipe.distill.mode, recipe.distill.beta) == ("sft-123", "on_policy", 0.9)
    assert recipe.distill.loss == "jsd" and recipe.hyperparameters.max_steps == 2 and recipe.dataset.limit == 8
    with pytest.raises(RecipeError, match="distill.loss"):
        bad = DistillConfig(distill={"loss": "kl"})
        apply_overrides(load_recipe(bad.recipe), bad.recipe_overrides())
