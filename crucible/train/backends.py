"""Where a run trains: the one place that picks the backend (in process or Tinker) and the device.

The recipe says what to train; ``TrainerSettings`` (filled by the Dagster trainer resource, or by
hand) say on which machine. Precedence, when both name a device: the trainer's ``device`` wins
over the recipe's ``hyperparameters.device`` (a deployment knows its hardware better than a
recipe written elsewhere), and the override is logged whenever the two disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from crucible.train.config import resolve_device
from crucible.train.recipes import Recipe

if TYPE_CHECKING:
    from crucible.train.backend import TrainingBackend

log = logging.getLogger(__name__)

TrainerDevice = Literal["recipe", "auto", "cpu", "cuda"]
TrainerLauncher = Literal["local", "torchrun"]
DistributedStrategy = Literal["ddp", "fsdp"]


@dataclass(frozen=True)
class TrainerSettings:
    """The machine's side of a run: a device override (``recipe`` keeps the recipe's), torch's CPU
    thread cap (0 leaves torch's default), the Tinker API key, how the run is launched (``local``: this
    process; ``torchrun``: ``nproc_per_node`` processes, ``ddp`` replicas or ``fsdp`` shards, see
    ``crucible.train.distributed``) and whether to record a ``torch.profiler`` trace."""

    device: TrainerDevice = "recipe"
    num_threads: int = 0
    tinker_api_key: str | None = None
    launcher: TrainerLauncher = "local"
    nproc_per_node: int = 1
    strategy: DistributedStrategy = "ddp"
    profile: bool = False

    def __post_init__(self) -> None:
        if self.launcher not in ("local", "torchrun"):
            raise ValueError(f"TrainerSettings(launcher={self.launcher!r}): expected 'local' or 'torchrun'")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"TrainerSettings(strategy={self.strategy!r}): expected 'ddp' or 'fsdp'")
        if self.nproc_per_node < 1:
            raise ValueError(f"TrainerSettings(nproc_per_node={self.nproc_per_node}): need at least 1 process")


@dataclass(frozen=True)
class DeviceChoice:
    """Which device a run asks for and who decided: ``recipe`` or ``trainer``; ``note`` explains an override."""

    device: str
    decided_by: Literal["recipe", "trainer"]
    note: str = ""

    def who(self, recipe_name: str) -> str:
        """Who asks for the device, as errors name it."""
        if self.decided_by == "recipe":
            return f"recipe {recipe_name}"
        return f"TrainerResource(device={self.device!r}), overriding recipe {recipe_name}'s device,"


def choose_device(recipe: Recipe, settings: TrainerSettings) -> DeviceChoice:
    """The device of a run: the trainer's when it sets one, else the recipe's (see the module doc)."""
    asked = recipe.hyperparameters.device
    if settings.device == "recipe":
        return DeviceChoice(asked, "recipe")
    note = ""
    if settings.device != asked:
        note = (f"the trainer's device {settings.device!r} overrides recipe {recipe.name}'s device {asked!r} "
                "(the trainer resource takes precedence)")
    return DeviceChoice(settings.device, "trainer", note)


def configure_recipe(recipe: Recipe, settings: TrainerSettings,
                     warn: Callable[[str], None] | None = None) -> Recipe:
    """The recipe as it will run on this trainer: the chosen device written into its hyperparameters.

    A device this machine cannot use is refused here (``DeviceUnavailableError``), before any data
    is read or any model loaded, naming whoever asked for it. An override is reported through
    ``warn`` (this module's logger by default). Idempotent: configuring a configured recipe with the
    same settings changes nothing and warns nothing.
    """
    if settings.num_threads:
        import torch

        torch.set_num_threads(settings.num_threads)
    choice = choose_device(recipe, settings)
    if choice.note:
        (warn or log.warning)(choice.note)
    if choice.device != recipe.hyperparameters.device:
        recipe = recipe.model_copy(update={
            "hyperparameters": recipe.hyperparameters.model_copy(update={"device": choice.device})})
    if recipe.backend.kind == "local":
        resolve_device(choice.device, who=choice.who(recipe.name))
    return recipe


def run_device(recipe: Recipe, settings: TrainerSettings | None = None) -> str:
    """The torch device a local run of ``recipe`` uses on this trainer, ``auto`` resolved to ``cuda`` or
    ``cpu``: for work done beside the backend (a teacher generating answers, a frozen reference)."""
    choice = choose_device(recipe, settings or TrainerSettings())
    return resolve_device(choice.device, who=choice.who(recipe.name))


def load_model_for(recipe: Recipe, tokenizer_texts: Iterable[str] | None = None) -> tuple[Any, Any]:
    """The model and tokenizer a run needs here: with Tinker the service holds the weights, so the
    model is None and only the tokenizer is loaded."""
    if recipe.backend.kind == "tinker":
        from transformers import AutoTokenizer

        return None, AutoTokenizer.from_pretrained(recipe.base_model.name_or_path)
    from crucible.train.models import load_model_and_tokenizer

    return load_model_and_tokenizer(recipe.base_model, tokenizer_texts=tokenizer_texts,
                                    seed=recipe.hyperparameters.seed)


def make_backend(recipe: Recipe, model: Any, tokenizer: Any, settings: TrainerSettings | None = None
                 ) -> TrainingBackend:
    """The training backend of ``recipe`` on this trainer: ``TinkerBackend`` for ``backend.kind:
    tinker`` (with the trainer's API key), else ``LocalBackend`` on the chosen device."""
    settings = settings or TrainerSettings()
    recipe = configure_recipe(recipe, settings)
    if recipe.backend.kind == "tinker":
        from crucible.train.tinker_backend import TinkerBackend

        return TinkerBackend.from_recipe(recipe, api_key=settings.tinker_api_key)
    from crucible.train.local_backend import LocalBackend

    return LocalBackend.from_hyperparameters(model, tokenizer, recipe.hyperparameters)
