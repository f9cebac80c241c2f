"""The splits asset: each dataset's examples assigned to train/validation/test and to k folds of train."""

import dagster as dg
from pydantic import Field

from crucible.data.sampling import split_with_folds
from crucible.quarantine import store_validated
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import table_metadata
from crucible_assets.partitions import datasets_partitions
from resources.lake import LakeResource
from schemas import EXAMPLES, SPLITS


class SplitsConfig(dg.Config):
    seed: int = Field(default=0, description="Seed of the split and of the folds.")
    train: float = Field(default=0.8, gt=0, lt=1)
    validation: float = Field(default=0.1, gt=0, lt=1)
    test: float = Field(default=0.1, gt=0, lt=1)
    folds: int = Field(default=5, ge=2, description="Number of folds of the train part.")


@dg.asset(
    key=["datasets", "splits"], deps=[examples], partitions_def=datasets_partitions, group_name="datasets",
    kinds={"deltalake", "pandera"}, owners=["team:ml-platform"],
    description="One dataset's examples split train/validation/test by seeded fractions, plus k folds of the "
                "train part: split_name 'fold-<i>' (fold column i) lists the train examples fold i holds out.",
)
def splits(context: dg.AssetExecutionContext, config: SplitsConfig, lake: LakeResource) -> dg.MaterializeResult:
    name = context.partition_key
    store = lake.lake()
    examples_version = store.version(EXAMPLES)
    if examples_version < 0:
        raise dg.Failure(f"datasets/splits {name}: the examples table does not exist yet; materialize "
                         f"datasets/examples for {name} first")
    rows = store.read(EXAMPLES, where={"dataset": name}, version=examples_version)
    if rows.empty:
        raise dg.Failure(f"datasets/splits {name}: no rows of {name} in datasets/examples (version "
                         f"{examples_version}); materialize datasets/examples for {name} first")
    fractions = {"train": config.train, "validation": config.validation, "test": config.test}
    assigned = split_with_folds(rows, fractions, k=config.folds, seed=config.seed)
    stored = store_validated(store, SPLITS, assigned, source=f"datasets/examples@{examples_version}",
                             replace_where={"dataset": name})
    counts = {str(k): int(v) for k, v in assigned.groupby("split_name").size().items()}
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "dataset": name, "examples_table_version": examples_version,
        "split_counts": dg.MetadataValue.json(counts), "seed": config.seed,
    })
