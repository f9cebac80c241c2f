"""Dataset assets: every benchmark or user dataset as a validated partition of datasets/examples."""

import dagster as dg

from crucible.quarantine import quarantine_rows, store_quarantined, store_validated
from crucible_assets.metadata import table_metadata
from crucible_assets.partitions import datasets_partitions
from resources.datasets import DatasetSourcesResource
from resources.lake import LakeResource
from schemas import EXAMPLES


@dg.asset(
    key=["datasets", "examples"], partitions_def=datasets_partitions, group_name="datasets",
    kinds={"deltalake", "pandera"}, owners=["team:ml-platform"],
    description="All examples of one dataset (one partition per dataset) in the normalized examples table. "
                "Malformed records go to quarantine/rows with the file, line and problem.",
)
def examples(context: dg.AssetExecutionContext, lake: LakeResource,
             dataset_sources: DatasetSourcesResource) -> dg.MaterializeResult:
    name = context.partition_key
    store = lake.lake()
    loaded = dataset_sources.load(name)
    load_failures = quarantine_rows(EXAMPLES.path, (({"raw": e.raw, "field": e.field}, e.source,
                                                     str(e)) for e in loaded.errors))
    store_quarantined(store, load_failures)
    frame = loaded.to_frame()
    stored = store_validated(store, EXAMPLES, frame, source=frame["source"], replace_where={"dataset": name})
    for error in loaded.errors[:20]:
        context.log.warning("quarantined %s", error)
    splits = frame.groupby("split").size().to_dict() if len(frame) else {}
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "dataset": name, "quarantined": stored.quarantined + len(loaded.errors),
        "rows_in": stored.rows_in + len(loaded.errors), "splits": dg.MetadataValue.json(splits),
    })
