"""Launchpad and resource settings a user can get wrong fail with the bad value and what to do."""

import dagster as dg
import pydantic
import pytest
import torch

from crucible_assets.datasets.assets import examples
from crucible_assets.training.assets import sft_checkpoint
from crucible_assets.training.config import SFTConfig
from resources.monitoring import DriftPolicyResource
from resources.trainer import TrainerResource


def train(resources: dict, instance, config: dict | None = None) -> str:
    result = dg.materialize([sft_checkpoint], instance=instance, resources=resources, raise_on_error=False,
                            run_config={"ops": {"training__sft_checkpoint": {"config": config or {}}}},
                            selection=[sft_checkpoint])
    assert not result.success
    return result.get_step_failure_events()[0].step_failure_data.user_failure_data.description


def test_training_before_any_dataset_says_to_ingest_first(tmp_path, resources_for):
    with dg.DagsterInstance.ephemeral() as instance:
        message = train(resources_for(tmp_path), instance)
    assert "no dataset has been loaded yet" in message and "run dataset_ingest_job for partition 'gsm8k'" in message


def test_training_on_a_dataset_never_loaded_lists_the_loaded_ones(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "tiny.jsonl").write_text('{"input": "1+1?", "target": "2"}\n')
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("datasets", ["tiny"])
        assert dg.materialize([examples], partition_key="tiny", instance=instance, resources=resources).success
        message = train(resources, instance, {"overrides": {"dataset.name": "nosuch"}})
    assert "trains on nosuch/train" in message and "it holds tiny/train" in message
    assert "Run dataset_ingest_job for 'nosuch'" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_trainer_without_cuda_fails_the_asset_before_reading_data(tmp_path, resources_for):
    resources = {**resources_for(tmp_path), "trainer": TrainerResource(device="cuda")}
    with dg.DagsterInstance.ephemeral() as instance:
        message = train(resources, instance)
    assert "TrainerResource(device='cuda'), overriding recipe sft_tiny_gsm8k's device, asks for device 'cuda'" in message
    assert "no dataset has been loaded" not in message


def test_unknown_recipe_lists_the_available_ones(tmp_path, resources_for):
    with dg.DagsterInstance.ephemeral() as instance:
        message = train(resources_for(tmp_path), instance, {"recipe": "sft_nosuch"})
    assert "unknown recipe 'sft_nosuch': available recipes are" in message and "sft_tiny_gsm8k" in message


@pytest.mark.parametrize("settings", [{"dataset_limit": 0}, {"dataset_limit": -3}])
def test_a_non_positive_dataset_limit_is_refused_by_the_launchpad(settings):
    with pytest.raises(pydantic.ValidationError, match="dataset_limit"):
        SFTConfig(**settings)


@pytest.mark.parametrize("settings", [{"psi_threshold": 0}, {"psi_threshold": -0.1}, {"ks_p_value": 0},
                                      {"ks_p_value": 1.5}, {"psi_bins": 1}])
def test_drift_thresholds_outside_their_range_are_refused(settings):
    with pytest.raises(pydantic.ValidationError, match=next(iter(settings))):
        DriftPolicyResource(**settings)


@pytest.mark.parametrize("settings", [{"events_per_day": 0}, {"pii_share": 1.5}, {"long_prompt_share": -0.1},
                                      {"max_new_tokens": 0}])
def test_traffic_settings_outside_their_range_are_refused(settings):
    from crucible_assets.feedback.assets import InferenceTrafficConfig

    with pytest.raises(pydantic.ValidationError, match=next(iter(settings))):
        InferenceTrafficConfig(**settings)


@pytest.mark.parametrize(("settings", "message"), [
    ({"benchmarks": ["gsm8k", "nosuch"]}, "unknown benchmarks \\['nosuch'\\]"),
    ({"settings": {"gsm8k": {"shots": 3}}}, "unknown fields \\['shots'\\]"),
])
def test_evaluation_settings_a_user_can_get_wrong_name_the_mistake(settings, message):
    from crucible_assets.evaluation.assets import EvaluationConfig, _check_benchmarks

    config = EvaluationConfig(**settings)
    with pytest.raises(dg.Failure, match=message):
        _check_benchmarks(config.benchmarks)
        config.for_benchmark("gsm8k")


def test_an_unknown_gated_benchmark_is_refused():
    from resources.evaluation import PromotionPolicyResource

    with pytest.raises(pydantic.ValidationError, match="unknown gated benchmarks"):
        PromotionPolicyResource(gated_benchmarks=["gsm9k"])
