"""The machine that trains: this process on CPU or a GPU, or the Tinker service."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field


class TrainerResource(dg.ConfigurableResource):
    """Chooses where training runs; the recipe says what to train.

    ``device`` overrides the recipe's device (``auto`` picks CUDA when present). ``num_threads``
    caps torch's CPU threads (0 leaves torch's default).
    """

    device: Literal["recipe", "auto", "cpu", "cuda"] = "recipe"
    num_threads: int = Field(0, ge=0)
    tinker_api_key: str | None = Field(None, description="Tinker API key (use EnvVar('TINKER_API_KEY')).")

    def configure(self, recipe):
        """The recipe as this trainer will run it (device override applied).

        A device this machine cannot use (``cuda`` without CUDA) is refused here, before any data is
        read or any model loaded, naming whichever asked for it: the recipe or this resource.
        """
        from crucible.train.config import resolve_device

        if self.num_threads:
            import torch

            torch.set_num_threads(self.num_threads)
        if self.device != "recipe":
            recipe = recipe.model_copy(update={
                "hyperparameters": recipe.hyperparameters.model_copy(update={"device": self.device})})
        if recipe.backend.kind == "local":
            who = (f"recipe {recipe.name}" if self.device == "recipe" else
                   f"TrainerResource(device={self.device!r}), overriding recipe {recipe.name}'s device,")
            resolve_device(recipe.hyperparameters.device, who=who)
        return recipe

    def backend_factory(self, recipe):
        """None for the in-process backend; a factory building the Tinker backend otherwise."""
        if recipe.backend.kind != "tinker":
            return None
        from crucible.train.tinker_backend import TinkerBackend

        def make(model, tokenizer, recipe):
            return TinkerBackend.from_recipe(recipe, api_key=self.tinker_api_key)

        return make
