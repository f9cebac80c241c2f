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
