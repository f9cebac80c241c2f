"""Training recipes: the YAML experiment IR, validated, overridable and hashed.

A recipe names everything a run depends on (model, data, chat format, optimisation, loggers,
backend), so two runs with equal recipe hashes are the same experiment.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crucible.train.config import ModelSpec, TrainingHyperparameters
from crucible.train.loggers import ConsoleLogging, LoggerSettings
from crucible.train.renderers.base import TrainOn

RECIPES_DIR_ENV = "CRUCIBLE_RECIPES_DIR"



class RecipeError(ValueError):
    """A recipe that cannot be found, parsed or validated; the message names the bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSettings(_Strict):
    name: str = Field(min_length=1, description="dataset name, e.g. 'gsm8k'")
    split: str = "train"
    table_version: int | None = Field(
        None, ge=0, description="Delta table version to read (time travel); None = latest"
    )
    limit: int | None = Field(None, ge=1, description="use at most this many examples")


class LocalBackendSettings(_Strict):
    """Train in this process with PyTorch (device from ``hyperparameters.device``)."""

    kind: Literal["local"] = "local"


class TinkerBackendSettings(_Strict):
    """Train remotely on the Tinker service; the API key comes from the environment, never the recipe."""

    kind: Literal["tinker"] = "tinker"
    base_url: str | None = Field(None, description="service URL; None = TINKER_BASE_URL or the SDK default")
    train_mlp: bool = True
    train_attn: bool = True
    train_unembed: bool = True
    checkpoint_ttl_seconds: int | None = Field(
        None, ge=3600, description="lifetime of saved checkpoints on the service; None = never expire"
    )


BackendSettings = Annotated[LocalBackendSettings | TinkerBackendSettings, Field(discriminator="kind")]


class Recipe(_Strict):
    """One training experiment, as written in ``recipes/<name>.yaml``."""

    name: str = Field(min_length=1)
    description: str = ""
    method: Literal["sft"] = Field("sft", description="training method; dpo, rl and distill come later")
    base_model: ModelSpec
    dataset: DatasetSettings
    renderer: str = Field("auto", min_length=1, description="chat format name, or 'auto' from the model")
    train_on: TrainOn = TrainOn.ALL_ASSISTANT_MESSAGES
    hyperparameters: TrainingHyperparameters = Field(default_factory=TrainingHyperparameters)
    logging: list[LoggerSettings] = Field(default_factory=lambda: [ConsoleLogging()])
    backend: BackendSettings = Field(default_factory=LocalBackendSettings)

    @field_validator("logging", mode="before")
    @classmethod
    def _logger_shorthand(cls, value: Any) -> Any:
        # `- console` in YAML means a logger with default settings.
        if isinstance(value, list):
            return [{"kind": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _backend_can_run_model(self) -> Recipe:
        if self.backend.kind == "tinker":
            if self.base_model.name_or_path is None:
                raise ValueError("backend 'tinker' trains hosted models: set base_model.name_or_path")
            if self.base_model.gguf_file is not None:
                raise ValueError("backend 'tinker' cannot load a GGUF file: remove base_model.gguf_file")
        kinds = [settings.kind for settings in self.logging]
        duplicates = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if duplicates:
            raise ValueError(f"logging: each logger kind may appear once, repeated: {duplicates}")
        return self


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)


def validate_recipe(data: Mapping[str, Any], source: str = "recipe") -> Recipe:
    """Validate a recipe given as a mapping; errors name ``source`` and each bad field."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source}: expected a mapping of recipe fields, got {type(data).__name__}")
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as error:
        raise RecipeError(f"{source}: {_format_validation_error(error)}") from None


def _candidate_recipe_dirs() -> list[Path]:
    candidates: list[Path] = []
    configured = os.environ.get(RECIPES_DIR_ENV)
    if configured:
        candidates.append(Path(configured))
    # The project root is the first ancestor holding pyproject.toml and recipes/: from the source
    # tree (editable install, tests) and from the working directory (an installed package).
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "recipes").is_dir():
                candidates.append(folder / "recipes")
                break
    return list(dict.fromkeys(candidates))


def recipes_dir() -> Path:
    """The folder bare recipe names resolve in: $CRUCIBLE_RECIPES_DIR, else ``<project root>/recipes``."""
    for candidate in _candidate_recipe_dirs():
        if candidate.is_dir():
            return candidate
    raise RecipeError(
        f"no recipes folder found: set {RECIPES_DIR_ENV} or run from the project root (with recipes/)"
    )


def list_recipes() -> list[str]:
    """Names of the recipes shipped in :func:`recipes_dir`."""
    return sorted(path.stem for path in recipes_dir().glob("*.yaml"))


def resolve_recipe_path(path_or_name: str | Path) -> Path:
    """A path to an existing file, or a bare name looked up as ``<recipes dir>/<name>.yaml``."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    looks_like_path = path.suffix in {".yaml", ".yml"} or len(path.parts) > 1
    if looks_like_path:
        raise RecipeError(f"recipe file not found: {path}")
    for folder in _candidate_recipe_dirs():
        for suffix in (".yaml", ".yml"):
            candidate = folder / f"{path_or_name}{suffix}"
            if candidate.is_file():
                return candidate
    available = ", ".join(list_recipes()) or "none"
    raise RecipeError(f"unknown recipe {str(path_or_name)!r}: available recipes are {available}")


def load_recipe(path_or_name: str | Path) -> Recipe:
    """Load and validate a recipe from a YAML path or a bare name such as ``"sft_tiny_gsm8k"``."""
    path = resolve_recipe_path(path_or_name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    return validate_recipe(data if data is not None else {}, source=str(path))


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write the full recipe (defaults included) as YAML, e.g. into a run folder for provenance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


def _set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    parts = dotted_key.split(".")
    if any(not part for part in parts):
        raise RecipeError(f"override {dotted_key!r}: empty field name in dotted key")
    node: Any = tree
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(
                    f"override {dotted_key!r}: {where} is not an index of a {len(node)}-item list"
                )
            index = int(part)
            if last:
                node[index] = _merge(node[index], value)
                return
            node = node[index]
            continue
        if not isinstance(node, dict):
            parent = ".".join(parts[:depth])
            raise RecipeError(f"override {dotted_key!r}: {parent} is a value ({node!r}), not a section")
        if last:
            node[part] = _merge(node.get(part), value)
            return
        if node.get(part) is None:
            # An unset optional section (e.g. hyperparameters.lora) is created; validation fills defaults.
            node[part] = {}
        node = node[part]


def _merge(current: Any, value: Any) -> Any:
    if isinstance(current, dict) and isinstance(value, Mapping):
        merged = dict(current)
        for key, item in value.items():
            merged[key] = _merge(current.get(key), item)
        return merged
    return copy.deepcopy(value)


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    """A new recipe with ``overrides`` applied and re-validated.

    Keys may be dotted (``{"hyperparameters.learning_rate": 1e-4}``) or nested mappings
    (``{"hyperparameters": {"max_steps": 5}}``); nested mappings merge into the section rather than
    replace it. List items are addressed by index (``"logging.1.path"``).
    """
    tree = recipe.model_dump(mode="python")
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise RecipeError(f"override key {key!r}: expected a string field name")
        _set_dotted(tree, key, value)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as error:
        given = ", ".join(sorted(overrides))
        raise RecipeError(
            f"overrides ({given}) make an invalid recipe: {_format_validation_error(error)}"
        ) from None


def canonical_json(recipe: Recipe) -> str:
    """The recipe as JSON with sorted keys and no whitespace: the input of :func:`recipe_hash`."""
    return json.dumps(recipe.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False)


def recipe_hash(recipe: Recipe) -> str:
    """sha256 hex digest of the canonical JSON; defaults are included, so an omitted default and
    the same value written out hash alike."""
    return hashlib.sha256(canonical_json(recipe).encode("utf-8")).hexdigest()
