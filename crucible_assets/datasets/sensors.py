"""Datasets arrive at run time: built-in benchmarks and files dropped in the drop folder become partitions."""

import json

import dagster as dg

from crucible_assets.jobs import dataset_ingest_job
from crucible_assets.partitions import datasets_partitions
from resources.datasets import DatasetSourcesResource


@dg.sensor(job=dataset_ingest_job, minimum_interval_seconds=30,
           description="Adds a datasets partition for each built-in benchmark and each file in the drop folder, "
                       "and loads it; a changed file is loaded again.")
def dataset_drop_sensor(context: dg.SensorEvaluationContext, dataset_sources: DatasetSourcesResource):
    seen: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(datasets_partitions.name))
    current = {name: 0.0 for name in dataset_sources.available()}
    current.update({name: path.stat().st_mtime for name, path in dataset_sources.user_files().items()})
    changed = sorted(name for name, stamp in current.items() if seen.get(name) != stamp)
    if not changed:
        return dg.SkipReason("no new or changed datasets")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"{name}@{current[name]}") for name in changed],
        dynamic_partitions_requests=[datasets_partitions.build_add_request(sorted(set(changed) - known))],
        cursor=json.dumps({**seen, **{name: current[name] for name in changed}}, sort_keys=True),
    )
