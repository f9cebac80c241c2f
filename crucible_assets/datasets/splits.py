"""The splits asset: each dataset's examples assigned to train/validation/test and to k folds of train.

Splits follow their source: a re-run replaces the dataset's partition exactly, so examples that left
datasets/examples (a file that shrank or emptied) leave datasets/splits too, and a check proves that
every split row still points at a stored example.
"""

import warnings

import dagster as dg
import pandas as pd
from pydantic import Field

from crucible.data.sampling import split_with_folds
from crucible.quarantine import store_validated
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import table_definition_metadata, table_metadata
from crucible_assets.partitions import checked_partition_key, datasets_partitions
from resources.lake import LakeResource
from schemas import EXAMPLES, SPLITS

# Dangling ids beyond this many are counted but not listed in the check's metadata.
MAX_LISTED = 50


class SplitsConfig(dg.Config):
    seed: int = Field(default=0, description="Seed of the split and of the folds.")
    train: float = Field(default=0.8, gt=0, lt=1, description="Share of examples in the train split.")
    validation: float = Field(default=0.1, gt=0, lt=1, description="Share in the validation split.")
    test: float = Field(default=0.1, gt=0, lt=1, description="Share in the test split.")
    folds: int = Field(default=5, ge=2, description="Number of folds of the train part.")


def _examples_materialized(instance: dg.DagsterInstance, name: str) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=examples.key, asset_partitions=[name]), limit=1).records
    return bool(records)


@dg.asset(
    metadata=table_definition_metadata(SPLITS),
    key=["datasets", "splits"], deps=[examples], partitions_def=datasets_partitions, group_name="datasets",
    kinds={"deltalake", "pandera"}, owners=["team:ml-platform"],
    # A newly materialized examples partition brings its splits up to date (once the automation
    # sensor is on); the ingest job runs both anyway.
    automation_condition=dg.AutomationCondition.eager(),
    description="One dataset's examples split train/validation/test by seeded fractions, plus k folds of the "
                "train part: split_name 'fold-<i>' (fold column i) lists the train examples fold i holds out. "
                "A re-run replaces the dataset's rows exactly; an emptied dataset leaves an empty partition.",
)
def splits(context: dg.AssetExecutionContext, config: SplitsConfig, lake: LakeResource) -> dg.MaterializeResult:
    name = checked_partition_key(context)
    store = lake.lake()
    examples_version = store.version(EXAMPLES)
    if examples_version < 0 or not _examples_materialized(context.instance, name):
        raise dg.Failure(f"datasets/splits {name}: datasets/examples has never been materialized for {name}; "
                         f"materialize datasets/examples for {name} first (dataset_ingest_job runs both)")
    rows = store.read(EXAMPLES, where={"dataset": name}, version=examples_version)
    if rows.empty:
        # The dataset was loaded and is now empty (its file emptied): its splits must go too.
        context.log.warning("datasets/examples has no rows of %s at version %d: emptying its splits",
                            name, examples_version)
        assigned = pd.DataFrame(columns=SPLITS.columns)
    else:
        fractions = {"train": config.train, "validation": config.validation, "test": config.test}
        assigned = split_with_folds(rows, fractions, k=config.folds, seed=config.seed)
    stored = store_validated(store, SPLITS, assigned, source=f"datasets/examples@{examples_version}",
                             replace_where={"dataset": name})
    counts = {str(k): int(v) for k, v in assigned.groupby("split_name").size().items()}
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "dataset": name, "examples_table_version": examples_version,
        "examples_rows": len(rows), "emptied": rows.empty,
        "split_counts": dg.MetadataValue.json(counts), "seed": config.seed,
    })


def dangling_split_rows(split_rows: pd.DataFrame, example_rows: pd.DataFrame) -> pd.DataFrame:
    """Split rows whose (source_split, example_id) names no row of ``example_rows`` (split, example_id)."""
    stored = example_rows[["split", "example_id"]].rename(columns={"split": "source_split"}).drop_duplicates()
    joined = split_rows.merge(stored, on=["source_split", "example_id"], how="left", indicator=True)
    return joined.loc[joined["_merge"] == "left_only", split_rows.columns]


with warnings.catch_warnings():
    # Partitioned asset checks are a preview feature (see crucible_assets/datasets/checks.py).
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(asset=splits, partitions_def=datasets_partitions,
                    description="Every split row references an example stored in datasets/examples.")
    def splits_reference_stored_examples(context: dg.AssetCheckExecutionContext,
                                         lake: LakeResource) -> dg.AssetCheckResult:
        name = context.partition_key
        store = lake.lake()
        split_rows = store.read(SPLITS, where={"dataset": name})
        example_rows = store.read(EXAMPLES, where={"dataset": name}, columns=["split", "example_id"])
        dangling = dangling_split_rows(split_rows, example_rows)
        ids = sorted(set(dangling["source_split"] + "/" + dangling["example_id"]))
        return dg.AssetCheckResult(passed=dangling.empty, severity=dg.AssetCheckSeverity.ERROR, metadata={
            "dataset": name, "split_rows": len(split_rows), "examples": len(example_rows),
            "dangling_rows": len(dangling), "dangling_ids": dg.MetadataValue.json(ids[:MAX_LISTED]),
        })
