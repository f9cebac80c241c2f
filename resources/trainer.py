"""The machine that trains: this process on CPU or a GPU, or the Tinker service."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field


class TrainerResource(dg.ConfigurableResource):
    """Where training runs; the recipe says what to train. The choice itself is made by the core
    (``crucible.train.backends``): this resource only hands over its settings.

    ``device`` overrides the recipe's device and takes precedence over it (``recipe`` keeps the
    recipe's; ``auto`` picks CUDA when present); a disagreement is logged as a warning.
    ``num_threads`` caps torch's CPU threads (0 leaves torch's default).
    """

    device: Literal["recipe", "auto", "cpu", "cuda"] = "recipe"
    num_threads: int = Field(0, ge=0)
    tinker_api_key: str | None = Field(None, description="Tinker API key (use EnvVar('TINKER_API_KEY')).")

    def settings(self):
        """The core's view of this trainer (``crucible.train.backends.TrainerSettings``)."""
        from crucible.train.backends import TrainerSettings

        return TrainerSettings(device=self.device, num_threads=self.num_threads, tinker_api_key=self.tinker_api_key)

    def configure(self, recipe):
        """The recipe as this trainer will run it (device decided by the core, overrides logged).

        A device this machine cannot use (``cuda`` without CUDA) is refused here, before any data is
        read or any model loaded, naming whichever asked for it: the recipe or this resource.
        """
        from crucible.train.backends import configure_recipe

        return configure_recipe(recipe, self.settings(), warn=dg.get_dagster_logger().warning)
