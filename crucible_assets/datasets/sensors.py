"""Datasets arrive at run time: built-in benchmarks and files dropped in the drop folder become partitions."""

import json

import dagster as dg

from crucible.data.loaders import BUILTIN_DATASETS
from crucible_assets.jobs import dataset_ingest_job
from crucible_assets.partitions import datasets_partitions
from resources.datasets import DatasetSourcesResource

# Run tag listing the drop-folder entries that were skipped when the run was requested.
SKIPPED_TAG = "crucible/drop_folder_skipped"


@dg.sensor(job=dataset_ingest_job, minimum_interval_seconds=30,
           description="Adds a datasets partition for each built-in benchmark and each file in the drop folder, "
                       "and loads it; a changed file (or field mapping) is loaded again. Entries that cannot be "
                       "loaded (dangling links, folders, unreadable files, clashing names) are logged as "
                       "warnings with what to do, and the valid files beside them are still loaded.")
def dataset_drop_sensor(context: dg.SensorEvaluationContext, dataset_sources: DatasetSourcesResource):
    seen: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
    scan = dataset_sources.scan()
    skipped = [problem.message for problem in scan.problems]
    for message in skipped:
        context.log.warning(message)
    current = dict.fromkeys(BUILTIN_DATASETS, 0.0)
    current.update({name: file.stamp for name, file in scan.files.items()})
    changed = sorted(name for name, stamp in current.items() if seen.get(name) != stamp)
    if not changed:
        return dg.SkipReason("no new or changed datasets" + (f"; {len(skipped)} drop folder entries skipped: "
                                                             + "; ".join(skipped) if skipped else ""))
    known = set(context.instance.get_dynamic_partitions(datasets_partitions.name))
    tags = {SKIPPED_TAG: "; ".join(skipped)} if skipped else {}
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"{name}@{current[name]}", tags=tags)
                      for name in changed],
        dynamic_partitions_requests=[datasets_partitions.build_add_request(sorted(set(changed) - known))],
        cursor=json.dumps({**seen, **{name: current[name] for name in changed}}, sort_keys=True),
    )
