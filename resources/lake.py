"""Where the lakehouse and the artifacts live: a local folder by default, object storage by config."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from crucible.lake import DeltaLake, default_home, default_lake_root

__all__ = ["LakeResource", "default_home"]


class LakeResource(dg.ConfigurableResource):
    """The Delta lake (tables) and the artifact store (checkpoints) of one Crucible deployment."""

    root: str = Field(default_factory=default_lake_root,
                      description="Folder or URI (s3://, gs://, az://) under which every Delta table lives.")
    artifacts_root: str = Field(
        default_factory=lambda: os.environ.get("CRUCIBLE_ARTIFACTS_ROOT", f"{default_home()}/artifacts"),
        description="Folder for model checkpoints and run files.")
    storage_options: dict[str, str] = Field(default_factory=dict,
                                            description="deltalake storage options (credentials, region, endpoint).")

    def lake(self) -> DeltaLake:
        return DeltaLake(self.root, self.storage_options)

    def artifact_dir(self, *parts: str) -> Path:
        path = Path(self.artifacts_root, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
