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
from crucible.train.rewards import GSM8KReward, RewardSpec

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


class DistillSettings(_Strict):
    """Token-level distillation from a teacher's logits, or sequence-level from its generations."""

    teacher: str = Field("latest_sft", min_length=1,
                         description="'latest_sft' (the newest SFT run), a training run id, a checkpoint folder "
                                     "or a Hugging Face model name")
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    beta: float = Field(0.5, ge=0.0, le=1.0, description="generalized JSD weight: 0 = forward KL, 1 = reverse KL")
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature of the loss and of sampling")
    alpha: float = Field(0.0, ge=0.0, le=1.0, description="weight of cross-entropy on the labels in the loss")
    mode: Literal["off_policy", "on_policy", "sequence"] = "off_policy"
    max_new_tokens: int = Field(64, ge=1, description="completion length sampled in on-policy and sequence modes")


class RLSettings(_Strict):
    """GRPO: sample ``group_size`` completions per prompt, reward them, and take clipped policy-gradient steps
    on group-relative advantages (``hyperparameters.batch_size`` prompts per step)."""

    group_size: int = Field(8, ge=2, description="completions sampled per prompt")
    epsilon_low: float = Field(0.2, ge=0.0, lt=1.0, description="ratio clipped below at 1 - epsilon_low")
    epsilon_high: float = Field(0.28, ge=0.0, description="ratio clipped above at 1 + epsilon_high")
    kl_beta: float = Field(0.0, ge=0.0, description="weight of the k3 KL penalty to the starting policy; 0 = none")
    scale_rewards: bool = Field(True, description="divide advantages by the group's reward std")
    passes: int = Field(1, ge=1, description="optimizer steps on each sampled batch")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature (also applied to the log-probs)")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(64, ge=1, description="completion length limit")
    loss_normalization: Literal["token", "sequence"] = Field(
        "token", description="token: mean over all completion tokens; sequence: mean of per-completion means")
    micro_batch_size: int | None = Field(None, ge=1, description="completions per forward pass; None = all")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [GSM8KReward()], min_length=1)
    parent_run_id: str | None = Field(None, description="SFT run to start from; None = the newest SFT run")

    @field_validator("rewards", mode="before")
    @classmethod
    def _reward_shorthand(cls, value: Any) -> Any:
        # `- gsm8k` in YAML means that reward with weight 1.
        if isinstance(value, list):
            return [{"kind": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _distinct_reward_names(self) -> RLSettings:
        labels = [reward.label for reward in self.rewards]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"rewards: give each reward of the same kind its own 'name', repeated: {repeated}")
        return self


class DPOSettings(_Strict):
    """Direct preference optimisation on (prompt, chosen, rejected) pairs against a fixed reference policy."""

    beta: float = Field(0.1, gt=0.0, description="strength of the pull towards the reference (IPO: its tau)")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5,
                                   description="probability that a label is flipped (conservative DPO; sigmoid only)")
    reference: Literal["cached", "frozen"] = Field(
        "cached", description="cached: reference log-probs computed once and stored in training/reference_logprobs; "
                              "frozen: a frozen copy of the starting model scores every batch")
    parent_run_id: str | None = Field(None, description="SFT run to start from; None = the newest SFT run")
    pairs_table: str | None = Field(None, description="read pairs (prompt|messages, chosen, rejected columns) from "
                                                      "this lake table, e.g. 'feedback/preference_pairs', instead of "
                                                      "datasets/examples")

    @model_validator(mode="after")
    def _smoothing_needs_sigmoid(self) -> DPOSettings:
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError(f"label_smoothing applies to loss_type 'sigmoid' only, not {self.loss_type!r}")
        return self


class Recipe(_Strict):
    """One training experiment, as written in ``recipes/<name>.yaml``."""

    name: str = Field(min_length=1)
    description: str = ""
    method: Literal["sft", "dpo", "rl", "distill"] = Field("sft", description="training method")
    base_model: ModelSpec
    dataset: DatasetSettings
    renderer: str = Field("auto", min_length=1, description="chat format name, or 'auto' from the model")
    train_on: TrainOn = TrainOn.ALL_ASSISTANT_MESSAGES
    hyperparameters: TrainingHyperparameters = Field(default_factory=TrainingHyperparameters)
    logging: list[LoggerSettings] = Field(default_factory=lambda: [ConsoleLogging()])
    backend: BackendSettings = Field(default_factory=LocalBackendSettings)
    distill: DistillSettings | None = Field(None, description="settings of method 'distill'")
    rl: RLSettings | None = Field(None, description="settings of method 'rl'")
    dpo: DPOSettings | None = Field(None, description="settings of method 'dpo'")

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

    @model_validator(mode="after")
    def _distill_section_matches_method(self) -> Recipe:
        if self.distill is not None and self.method != "distill":
            raise ValueError(f"distill: settings for method 'distill', but method is {self.method!r}")
        if self.method == "distill" and self.distill is None:
            self.distill = DistillSettings()
        return self

    @model_validator(mode="after")
    def _rl_section_matches_method(self) -> Recipe:
        if self.rl is not None and self.method != "rl":
            raise ValueError(f"rl: settings for method 'rl', but method is {self.method!r}")
        if self.method == "rl" and self.rl is None:
            self.rl = RLSettings()
        return self

    @model_validator(mode="after")
    def _dpo_section_matches_method(self) -> Recipe:
        if self.dpo is not None and self.method != "dpo":
            raise ValueError(f"dpo: settings for method 'dpo', but method is {self.method!r}")
        if self.method == "dpo" and self.dpo is None:
            self.dpo = DPOSettings()
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
