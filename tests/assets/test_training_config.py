"""The training asset's launchpad config: typed hyperparameter fields that override the recipe."""

import pytest

from crucible.train.recipes import RecipeError, apply_overrides, load_recipe
from crucible_assets.definitions import defs
from crucible_assets.training.config import SFTConfig


def test_launchpad_schema_lists_every_scalar_hyperparameter():
    job = defs.resolve_job_def("retrain_job")
    ops = job.run_config_schema.config_type.fields["ops"].config_type
    config = ops.fields["training__sft_checkpoint"].config_type.fields["config"].config_type
    fields = set(config.fields["hyperparameters"].config_type.fields)
    assert {"learning_rate", "max_steps", "batch_size", "schedule", "warmup_steps", "device", "seed"} <= fields
    assert {"recipe", "overrides", "dataset_limit", "trigger_reason"} <= set(config.fields)


def test_launchpad_values_override_the_recipe_and_are_revalidated():
    config = SFTConfig(hyperparameters={"max_steps": 3, "schedule": "linear"}, dataset_limit=5,
                       overrides={"hyperparameters.lora.rank": 4})
    recipe = apply_overrides(load_recipe(config.recipe), config.recipe_overrides())
    assert recipe.hyperparameters.max_steps == 3 and recipe.hyperparameters.schedule == "linear"
    assert recipe.dataset.limit == 5 and recipe.hyperparameters.lora.rank == 4
    assert recipe.hyperparameters.learning_rate == load_recipe(config.recipe).hyperparameters.learning_rate
    bad = SFTConfig(hyperparameters={"schedule": "bogus"})
    with pytest.raises(RecipeError, match="schedule"):
        apply_overrides(load_recipe(bad.recipe), bad.recipe_overrides())


def test_resuming_a_run_through_the_asset_ends_on_the_same_weights(tmp_path, resources_for):
    import dagster as dg

    from crucible.registry.versions import artifact_sha256
    from crucible.train.runs import latest_run
    from crucible_assets.datasets.assets import examples
    from crucible_assets.training.assets import sft_checkpoint

    resources = resources_for(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("datasets", ["gsm8k"])
        assert dg.materialize([examples], partition_key="gsm8k", instance=instance, resources=resources).success
        settings = {"hyperparameters": {"max_steps": 4, "checkpoint_every": 2, "eval_every": 0}, "dataset_limit": 16}

        def train(extra: dict) -> tuple[dict, int]:
            config = {"ops": {"training__sft_checkpoint": {"config": {**settings, **extra}}}}
            result = dg.materialize([sft_checkpoint], instance=instance, resources=resources, run_config=config,
                                    selection=[sft_checkpoint])
            assert result.success
            metadata = result.asset_materializations_for_node("training__sft_checkpoint")[0].metadata
            return latest_run(resources["lake"].lake()), metadata["resumed_from_step"].value

        first, started_at = train({})
        first_sha = artifact_sha256(first["checkpoint_uri"])
        resumed, resumed_at = train({"resume_run_id": first["run_id"]})
    assert started_at == 0 and resumed_at == 2
    assert resumed["run_id"] == first["run_id"] and resumed["steps"] == 4
    assert artifact_sha256(resumed["checkpoint_uri"]) == first_sha


def test_the_launchpad_offers_the_shipped_recipes_of_each_method():
    from crucible_assets.training.config import SFTConfig, shipped_recipes
    from crucible_assets.training.distill import DistillConfig
    from crucible_assets.training.rl import RLConfig

    assert "sft_tiny_gsm8k" in shipped_recipes("sft") and "rl_tiny_sums" in shipped_recipes("rl")
    assert "rl_tiny_sums" not in shipped_recipes("sft")
    assert "sft_tiny_gsm8k" in SFTConfig.model_fields["recipe"].description
    assert "rl_tiny_gsm8k" in RLConfig.model_fields["recipe"].description
    assert "distill_tiny" in DistillConfig.model_fields["recipe"].description
    from crucible_assets.training.dpo import DPOConfig

    assert "dpo_tiny" in DPOConfig.model_fields["recipe"].description
