"""The machine that trains: this process on CPU or a GPU, N processes under torchrun, or the Tinker service."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

TRAINING_GPU_POOL = "crucible/gpu"
"""The Dagster concurrency pool of every asset that trains on the trainer's GPU(s): its limit (1 in
crucible_assets/dagster.yaml) is how many training steps may hold the GPUs at once."""


class TrainerResource(dg.ConfigurableResource):
    """Where training runs; the recipe says what to train. The choice itself is made by the core
    (``crucible.train.backends``): this resource only hands over its settings.

    ``device`` overrides the recipe's device and takes precedence over it (``recipe`` keeps the
    recipe's; ``auto`` picks CUDA when present); a disagreement is logged as a warning.
    ``num_threads`` caps torch's CPU threads (0 leaves torch's default).
    ``launcher="torchrun"`` trains in ``nproc_per_node`` processes (one per GPU; gloo on CPU), as
    DDP replicas or, with ``strategy="fsdp"``, as shards of a model too big for one GPU.
    ``profile`` writes a ``torch.profiler`` Chrome trace of a few steps into the run folder.
    """

    device: Literal["recipe", "auto", "cpu", "cuda"] = Field(
        "recipe", description="Device override: 'recipe' keeps the recipe's device; 'auto' picks CUDA when present.")
    num_threads: int = Field(0, ge=0, description="torch CPU threads per process (0: torch's default).")
    tinker_api_key: str | None = Field(None, description="Tinker API key (use EnvVar('TINKER_API_KEY')).")
    launcher: Literal["local", "torchrun"] = Field(
        "local", description="'local': train in the run's process; 'torchrun': nproc_per_node worker processes.")
    nproc_per_node: int = Field(1, ge=1, description="torchrun worker processes (one per GPU on CUDA).")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="torchrun: 'ddp' replicates the model on each process; 'fsdp' shards it (big models).")
    profile: bool = Field(False, description="Record a torch.profiler Chrome trace of a few steps in the run folder.")

    def settings(self):
        """The core's view of this trainer (``crucible.train.backends.TrainerSettings``)."""
        from crucible.train.backends import TrainerSettings

        return TrainerSettings(device=self.device, num_threads=self.num_threads, tinker_api_key=self.tinker_api_key,
                               launcher=self.launcher, nproc_per_node=self.nproc_per_node, strategy=self.strategy,
                               profile=self.profile)

    def configure(self, recipe):
        """The recipe as this trainer will run it (device decided by the core, overrides logged).

        A device this machine cannot use (``cuda`` without CUDA) is refused here, before any data is
        read or any model loaded, naming whichever asked for it: the recipe or this resource.
        """
        from crucible.train.backends import configure_recipe

        return configure_recipe(recipe, self.settings(), warn=dg.get_dagster_logger().warning)
