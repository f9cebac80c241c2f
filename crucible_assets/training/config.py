"""Launchpad config of the training assets, derived from the recipe's own pydantic models.

Dagster config accepts primitives, not ``Literal`` or nested pydantic models, so each scalar
hyperparameter becomes an optional field (``None`` = keep the recipe's value) and the recipe
re-validates whatever is set; anything else goes through ``overrides`` with dotted keys.
"""

import datetime as dt
import types
import typing

import dagster as dg
from pydantic import BaseModel, Field, create_model

from crucible.train.config import TrainingHyperparameters

_PRIMITIVES = (bool, int, float, str)


def _launchpad_type(annotation) -> tuple[type, str] | None:
    origin = typing.get_origin(annotation)
    if annotation in _PRIMITIVES:
        return annotation, ""
    if origin is typing.Literal:
        return str, f" One of {', '.join(map(str, typing.get_args(annotation)))}."
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _launchpad_type(inner[0])
    return None


def optional_overrides(model: type[BaseModel], name: str) -> type[dg.Config]:
    """A ``dg.Config`` with one optional field per scalar field of ``model``."""
    fields = {}
    for field_name, info in model.model_fields.items():
        resolved = _launchpad_type(info.annotation)
        if resolved is None:
            continue
        kind, choices = resolved
        description = f"{info.description or field_name} (recipe default when unset).{choices}"
        fields[field_name] = (kind | None, Field(None, description=description))
    return create_model(name, __base__=dg.Config, **fields)


HyperparameterOverrides = optional_overrides(TrainingHyperparameters, "HyperparameterOverrides")


def shipped_recipes(method: str) -> list[str]:
    """Names of the shipped recipes whose ``method`` is ``method`` (read from their YAML, not loaded)."""
    import yaml

    from crucible.train.recipes import RecipeError, recipes_dir

    try:
        folder = recipes_dir()
    except RecipeError:
        return []
    names = []
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and data.get("method", "sft") == method:
            names.append(path.stem)
    return names


def recipe_field(default: str, method: str):
    """The launchpad's recipe field, whose description offers the shipped recipes of ``method``."""
    known = ", ".join(shipped_recipes(method)) or "none shipped"
    return Field(default, description=f"Recipe name under recipes/ ({method} recipes: {known}), or a path to a "
                                      "YAML file.")


class SFTConfig(dg.Config):
    """Which recipe to run, what to change in it, and why this run happens."""

    recipe: str = recipe_field("sft_tiny_gsm8k", "sft")
    hyperparameters: HyperparameterOverrides = Field(
        default_factory=HyperparameterOverrides,
        description="Recipe hyperparameters to override for this run (e.g. max_steps, learning_rate); unset = the recipe's.")
    dataset_limit: int | None = Field(None, ge=1,
                                      description="Use at most this many examples (recipe default when unset).")
    overrides: dict = Field(default_factory=dict,
                            description='Any other recipe field by dotted key, e.g. {"hyperparameters.lora.rank": 8}.')
    resume_run_id: str = Field("", description="Continue this earlier run (e.g. one that was killed) from its "
                                                "newest checkpoint instead of starting a new one.")
    trigger_reason: str = Field("manual", description="Why this run was started (manual, drift, quality, curated_volume; a sensor sets it); recorded on the run row and its lineage.")
    data_window_start: str = Field("", description="First day (YYYY-MM-DD) of the feedback window whose curated "
                                                   "examples are added to the recipe's data; empty = recipe data only.")
    data_window_end: str = Field("", description="Last day (YYYY-MM-DD) of that window, included.")

    def recipe_overrides(self) -> dict:
        chosen = {f"hyperparameters.{k}": v for k, v in self.hyperparameters.model_dump(exclude_none=True).items()}
        if self.dataset_limit is not None:
            chosen["dataset.limit"] = self.dataset_limit
        return {**chosen, **self.overrides}

    def feedback_window(self) -> tuple[dt.date, dt.date] | None:
        """The (start, end) days to add curated feedback from, None for a run on the recipe's data only."""
        return window_of(self.data_window_start, self.data_window_end, "data_window")


def window_of(start: str, end: str, name: str) -> tuple[dt.date, dt.date] | None:
    """``start``/``end`` (YYYY-MM-DD, both or neither) as dates; a ValueError naming ``<name>_start``/``_end``."""
    if not start and not end:
        return None
    if not start or not end:
        raise ValueError(f"{name}_start={start!r} and {name}_end={end!r}: set both days of the window, or neither")
    try:
        window = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:
        raise ValueError(f"{name}_start={start!r} / {name}_end={end!r}: expected YYYY-MM-DD dates") from None
    if window[1] < window[0]:
        raise ValueError(f"{name}_start={start} comes after {name}_end={end}: the window ends before it starts")
    return window


def configured_recipe(config, trainer, method: str):
    """The launchpad's recipe with its overrides, as ``trainer`` will run it; a RecipeError when its
    method is not the one the asset trains."""
    from crucible.train.recipes import RecipeError, apply_overrides, load_recipe

    recipe = trainer.configure(apply_overrides(load_recipe(config.recipe), config.recipe_overrides()))
    if recipe.method != method:
        raise RecipeError(f"recipe {recipe.name} has method {recipe.method!r}; this asset trains {method!r} recipes")
    return recipe
