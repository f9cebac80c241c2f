"""Dataset assets: every benchmark or user dataset as a validated partition of datasets/examples."""

import dagster as dg

from crucible.data.loaders import DatasetReadError, LoadResult
from crucible.lake import DeltaLake
from crucible.quarantine import quarantine_origin, quarantine_rows, store_quarantined, store_validated
from crucible_assets.metadata import table_definition_metadata, table_metadata
from crucible_assets.partitions import datasets_partitions
from resources.datasets import DatasetSourcesResource
from resources.lake import LakeResource
from schemas import EXAMPLES

# Quarantined rows logged one by one; the rest are counted in one line (all are in quarantine/rows).
MAX_LOGGED = 20


def _quarantine_load_failures(context: dg.AssetExecutionContext, store: DeltaLake, loaded: LoadResult) -> None:
    """Store every row and file of this dataset that could not be loaded in quarantine/rows, and log them.

    They replace the rows of the dataset's previous load (a fixed file leaves none behind), in a scope
    of their own: store_validated replaces the scope ``datasets/examples[dataset=<name>]`` with the
    rows the schema rejects, which must not erase these.
    """
    scope = quarantine_origin(EXAMPLES, {"dataset": context.partition_key, "step": "load"})
    store_quarantined(store, quarantine_rows(EXAMPLES.path, loaded.quarantine_records()), origin=scope,
                      table=EXAMPLES.path)
    for error in loaded.file_errors:
        context.log.warning("could not read %s (quarantined as one row)", error)
    for error in loaded.errors[:MAX_LOGGED]:
        context.log.warning("quarantined %s", error)
    if len(loaded.errors) > MAX_LOGGED:
        context.log.warning("quarantined %d more rows (see quarantine/rows)", len(loaded.errors) - MAX_LOGGED)


@dg.asset(
    metadata=table_definition_metadata(EXAMPLES),
    key=["datasets", "examples"], partitions_def=datasets_partitions, group_name="datasets",
    kinds={"deltalake", "pandera"}, owners=["team:ml-platform"],
    description="All examples of one dataset (one partition per dataset) in the normalized examples table. "
                "Malformed records go to quarantine/rows with the file, line and problem; a file that cannot "
                "be read goes there as one row while the dataset's other files load. When nothing at all can "
                "be read the run fails and the partition keeps its stored rows.",
)
def examples(context: dg.AssetExecutionContext, lake: LakeResource,
             dataset_sources: DatasetSourcesResource) -> dg.MaterializeResult:
    name = context.partition_key
    store = lake.lake()
    try:
        loaded = dataset_sources.load(name)
    except DatasetReadError as error:
        _quarantine_load_failures(context, store, LoadResult(file_errors=error.file_errors))
        raise dg.Failure(f"datasets/examples {name}: {error}", metadata={
            "file_errors": dg.MetadataValue.json([e.message for e in error.file_errors])}) from error
    _quarantine_load_failures(context, store, loaded)
    frame = loaded.to_frame()
    stored = store_validated(store, EXAMPLES, frame, source=frame["source"], replace_where={"dataset": name})
    failed = len(loaded.errors) + len(loaded.file_errors)
    splits = frame.groupby("split").size().to_dict() if len(frame) else {}
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "dataset": name, "quarantined": stored.quarantined + failed,
        "rows_in": stored.rows_in + failed, "splits": dg.MetadataValue.json(splits),
        "file_errors": dg.MetadataValue.json([error.message for error in loaded.file_errors]),
    })
