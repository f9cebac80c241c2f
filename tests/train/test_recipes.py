"""Recipes: shipped files validate, overrides apply or fail naming the field, hashes are stable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crucible.train.loggers import JsonlLogging
from crucible.train.recipes import (
    RecipeError,
    TinkerBackendSettings,
    apply_overrides,
    canonical_json,
    list_recipes,
    load_recipe,
    recipe_hash,
    recipes_dir,
    save_recipe,
    validate_recipe,
)

PROJECT_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHIPPED = sorted(path.stem for path in PROJECT_RECIPES.glob("*.yaml"))


def test_the_demo_recipes_are_shipped() -> None:
    assert {"sft_tiny_gsm8k", "sft_smollm2_gsm8k"} <= set(SHIPPED)
    assert list_recipes() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_validates(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name, "a recipe's name matches its file name"
    assert load_recipe(PROJECT_RECIPES / f"{name}.yaml") == recipe


def test_tiny_recipe_is_a_cpu_demo() -> None:
    recipe = load_recipe("sft_tiny_gsm8k")
    assert recipe.base_model.tiny is not None and recipe.base_model.tiny.family == "llama"
    assert (recipe.dataset.name, recipe.renderer, recipe.hyperparameters.device) == ("gsm8k", "chatml", "cpu")
    assert recipe.hyperparameters.max_steps <= 20
    assert recipe.backend.kind == "local"


def test_smollm2_recipe_uses_lora_on_the_real_model() -> None:
    recipe = load_recipe("sft_smollm2_gsm8k")
    assert recipe.base_model.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert recipe.hyperparameters.lora is not None and recipe.hyperparameters.lora.rank == 16


def test_bare_name_resolves_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_recipe("sft_tiny_gsm8k").name == "sft_tiny_gsm8k"
    assert recipes_dir() == PROJECT_RECIPES


def test_recipes_dir_can_be_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe("sft_tiny_gsm8k").model_copy(update={"name": "elsewhere"})
    save_recipe(recipe, tmp_path / "elsewhere.yaml")
    monkeypatch.setenv("CRUCIBLE_RECIPES_DIR", str(tmp_path))
    assert load_recipe("elsewhere") == recipe


def test_unknown_recipe_lists_the_available_ones() -> None:
    with pytest.raises(RecipeError, match="unknown recipe 'no_such_recipe'.*sft_tiny_gsm8k"):
        load_recipe("no_such_recipe")
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe("somewhere/missing.yaml")


def test_invalid_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    data = yaml.safe_load((PROJECT_RECIPES / "sft_tiny_gsm8k.yaml").read_text())
    data["hyperparameters"]["batch_size"] = 0
    data["train_on"] = "everything"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))

    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert str(path) in message
    assert "hyperparameters.batch_size" in message and "train_on" in message


def test_yaml_syntax_error_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_dotted_and_nested_overrides_apply_and_revalidate() -> None:
    recipe = load_recipe("sft_tiny_gsm8k")
    changed = apply_overrides(
        recipe,
        {"hyperparameters.learning_rate": 1e-4, "hyperparameters": {"max_steps": 5}, "dataset.limit": "8"},
    )

    assert changed.hyperparameters.learning_rate == 1e-4
    assert changed.hyperparameters.max_steps == 5
    assert changed.hyperparameters.batch_size == recipe.hyperparameters.batch_size, "nested dicts merge"
    assert changed.dataset.limit == 8
    assert recipe.hyperparameters.max_steps == 10, "the original recipe is unchanged"


def test_override_creates_an_unset_optional_section() -> None:
    changed = apply_overrides(load_recipe("sft_tiny_gsm8k"), {"hyperparameters.lora.rank": 4})
    assert changed.hyperparameters.lora is not None
    assert (changed.hyperparameters.lora.rank, changed.hyperparameters.lora.alpha) == (4, 16.0)


def test_override_list_item_by_index() -> None:
    changed = apply_overrides(load_recipe("sft_tiny_gsm8k"), {"logging.1.path": "other.jsonl"})
    assert changed.logging[1] == JsonlLogging(path="other.jsonl")


def test_switching_to_tinker_with_a_hosted_model() -> None:
    changed = apply_overrides(
        load_recipe("sft_tiny_gsm8k"),
        {"backend": "tinker", "base_model": {"name_or_path": "meta-llama/Llama-3.2-1B", "tiny": None}},
    )
    assert isinstance(changed.backend, TinkerBackendSettings)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"hyperparameters.learning_rate": -1.0},
            "hyperparameters.learning_rate: Input should be greater than 0",
        ),
        (
            {"hyperparameters.lerning_rate": 1e-4},
            "hyperparameters.lerning_rate: Extra inputs are not permitted",
        ),
        ({"method": "ppo"}, "method: Input should be 'sft'"),
        ({"hyperparameters.max_steps.value": 3}, "hyperparameters.max_steps is a value"),
        ({"logging.9.path": "x"}, "logging.9 is not an index"),
        ({"backend": "tinker"}, "backend 'tinker' trains hosted models"),
        ({"logging": ["console", "console"]}, "each logger kind may appear once"),
        ({"hyperparameters..seed": 1}, "empty field name"),
    ],
)
def test_bad_overrides_fail_naming_the_field(overrides: dict, expected: str) -> None:
    with pytest.raises(RecipeError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        apply_overrides(load_recipe("sft_tiny_gsm8k"), overrides)


def test_hash_ignores_key_order_and_spelled_out_defaults() -> None:
    data = yaml.safe_load((PROJECT_RECIPES / "sft_tiny_gsm8k.yaml").read_text())
    reordered = dict(reversed(list(data.items())))
    reordered["hyperparameters"] = dict(reversed(list(data["hyperparameters"].items())))
    with_defaults = {**data, "description": data["description"], "method": "sft"}
    with_defaults["hyperparameters"] = {**data["hyperparameters"], "weight_decay": 0.0, "pack": True}

    base = recipe_hash(validate_recipe(data))
    assert recipe_hash(validate_recipe(reordered)) == base
    assert recipe_hash(validate_recipe(with_defaults)) == base
    assert len(base) == 64 and int(base, 16) >= 0


def test_hash_changes_with_any_field() -> None:
    recipe = load_recipe("sft_tiny_gsm8k")
    assert recipe_hash(apply_overrides(recipe, {"hyperparameters.seed": 1})) != recipe_hash(recipe)
    assert recipe_hash(apply_overrides(recipe, {"dataset.table_version": 3})) != recipe_hash(recipe)


def test_hash_is_sha256_of_sorted_compact_json() -> None:
    recipe = load_recipe("sft_tiny_gsm8k")
    canonical = json.dumps(recipe.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert canonical_json(recipe) == canonical
    assert recipe_hash(recipe) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_hash_is_the_same_in_another_process() -> None:
    code = "from crucible.train.recipes import load_recipe, recipe_hash; print(recipe_hash(load_recipe('sft_tiny_gsm8k')))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == recipe_hash(load_recipe("sft_tiny_gsm8k"))


def test_saved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe("sft_smollm2_gsm8k")
    path = save_recipe(recipe, tmp_path / "run" / "recipe.yaml")
    assert load_recipe(path) == recipe
    assert recipe_hash(load_recipe(path)) == recipe_hash(recipe)
