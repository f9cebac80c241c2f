"""Partitions, declared once: datasets by name (users add their own at run time) and days.

``checked_partition_keys`` is the guard every partitioned asset calls first: Dagster accepts any
range in the ``dagster/asset_partition_range_*`` tags (a future end, a reversed range) and hands
the asset the keys it can derive from it, so an asset must refuse what its definition does not hold.
"""

import datetime as dt

import dagster as dg

from crucible.evaluate.benchmarks import BENCHMARKS

datasets_partitions = dg.DynamicPartitionsDefinition(name="datasets")

FEEDBACK_START = "2026-11-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=FEEDBACK_START, end_offset=1)

# Evaluation: every model version (a training run id, added when it is first evaluated) on every benchmark.
model_versions_partitions = dg.DynamicPartitionsDefinition(name="model_versions")
benchmark_partitions = dg.StaticPartitionsDefinition(list(BENCHMARKS))
evaluation_partitions = dg.MultiPartitionsDefinition(
    {"benchmark": benchmark_partitions, "model_version": model_versions_partitions})


def _valid_keys(context: dg.AssetExecutionContext, partitions_def: dg.PartitionsDefinition) -> list[str]:
    # The daily keys end today (end_offset=1) and the dataset keys live in the instance: both are
    # read now, at run time, not when the definitions were loaded.
    return list(partitions_def.get_partition_keys(dynamic_partitions_store=context.instance))


def _describe(keys: list[str]) -> str:
    if not keys:
        return "none yet"
    if len(keys) <= 6:
        return ", ".join(keys)
    return f"{keys[0]} .. {keys[-1]} ({len(keys)} keys)"


def _how_to_fix(partitions_def: dg.PartitionsDefinition) -> str:
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return (f"add the partition first (drop the file in the drop folder and let dataset_drop_sensor add it, "
                f"or instance.add_dynamic_partitions({partitions_def.name!r}, [name]))")
    return "pick days from the first partition up to today; a day's partition exists once the day has begun"


def checked_partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The partition keys of this run, in order, after refusing keys the asset's definition does not
    hold (a day after today, a dataset never added) and reversed ranges, before any work is done."""
    asset = context.assets_def.key.to_user_string()
    partitions_def = context.assets_def.partitions_def
    if partitions_def is None:
        raise dg.Failure(f"{asset} is not partitioned: checked_partition_keys applies to partitioned assets only")
    key_range = context.partition_key_range
    valid = _valid_keys(context, partitions_def)
    for which, key in (("start", key_range.start), ("end", key_range.end)):
        if key not in valid:
            label = "partition" if key_range.start == key_range.end else f"partition range {which}"
            raise dg.Failure(
                f"{asset}: {label} {key!r} is not a partition of {asset}; valid partitions: {_describe(valid)}. "
                f"Nothing was written. To fix: {_how_to_fix(partitions_def)}.",
                metadata={"requested_start": key_range.start, "requested_end": key_range.end,
                          "valid_first": valid[0] if valid else "", "valid_last": valid[-1] if valid else ""})
    start, end = valid.index(key_range.start), valid.index(key_range.end)
    if start > end:
        raise dg.Failure(
            f"{asset}: partition range {key_range.start} .. {key_range.end} is reversed (its start comes after "
            f"its end). Nothing was written. To fix: launch {key_range.end} .. {key_range.start} instead.",
            metadata={"requested_start": key_range.start, "requested_end": key_range.end})
    return valid[start:end + 1]


def checked_partition_key(context: dg.AssetExecutionContext) -> str:
    """The one partition key of this run, checked like :func:`checked_partition_keys`; a range of
    several keys is refused, since the asset handles one partition per run."""
    keys = checked_partition_keys(context)
    if len(keys) != 1:
        asset = context.assets_def.key.to_user_string()
        raise dg.Failure(
            f"{asset} handles one partition per run, but this run asks for {len(keys)} ({_describe(keys)}). "
            f"Nothing was written. To fix: launch a backfill with one run per partition, or one run per key.")
    return keys[0]


def single_day(context: dg.AssetExecutionContext) -> dt.date:
    """The one day of this run, checked like :func:`checked_partition_keys`. A daily asset handles one day
    per run (``BackfillPolicy.multi_run(1)``) so that each day's materialization carries its own figures;
    a range of several days is refused before any work is done."""
    keys = checked_partition_keys(context)
    if len(keys) != 1:
        asset = context.assets_def.key.to_user_string()
        raise dg.Failure(
            f"{asset} handles one day per run, but this run asks for {len(keys)} days ({_describe(keys)}). "
            f"Nothing was written. To fix: launch a backfill: one run per day (the asset's backfill policy), or "
            f"one run per partition key.",
            metadata={"requested_start": keys[0], "requested_end": keys[-1]})
    return dt.date.fromisoformat(keys[0])
