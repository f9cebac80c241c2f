"""Every partitioned asset refuses keys its partitions definition does not hold, before any work:
ranges past today, reversed ranges, datasets never added; a valid range still runs."""

import datetime as dt
import json

import dagster as dg
import pytest

from crucible.feedback.events import event_rows
from crucible.inference import Generation
from crucible.quarantine import store_validated
from crucible_assets.datasets.assets import examples
from crucible_assets.datasets.splits import splits
from crucible_assets.feedback.assets import inference_events
from crucible_assets.monitoring.assets import drift_report
from crucible_assets.partitions import FEEDBACK_START
from resources.monitoring import DriftPolicyResource
from schemas import DRIFT_REPORTS, INFERENCE_EVENTS, SPLITS

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = result.get_step_failure_events()
    assert len(failures) == 1
    return failures[0].step_failure_data.user_failure_data.description


@pytest.fixture
def served(tmp_path, resources_for):
    """A user dataset as the drift baseline and three days of traffic in the lake, on a real instance."""
    resources = resources_for(tmp_path)
    resources["drift_policy"] = DriftPolicyResource(baseline_dataset="prompts")
    drop = tmp_path / "drop"
    drop.mkdir()
    rows = [{"input": " ".join(["word"] * (3 + i % 7)), "target": str(i), "split": "train"} for i in range(40)]
    (drop / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (drop / "prompts.yaml").write_text("split: split\n")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["prompts"])
    assert dg.materialize([examples], partition_key="prompts", instance=instance, resources=resources).success
    store = resources["lake"].lake()
    for day in DAYS:
        prompts = [" ".join(["word"] * (3 + i % 5)) for i in range(30)]
        generations = [Generation("ok", 4, 1, "stop", 1.0) for _ in prompts]
        store_validated(store, INFERENCE_EVENTS, event_rows(dt.date.fromisoformat(day), prompts, generations, "m", 1),
                        source="test traffic", replace_where={"day": dt.date.fromisoformat(day)})
    yield resources, instance
    instance.dispose()


def run_range(assets, start: str, end: str, resources: dict, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False,
                          tags={RANGE_START: start, RANGE_END: end})


@pytest.mark.parametrize("asset", [drift_report, inference_events], ids=lambda a: a.key.to_user_string())
def test_a_range_past_today_is_refused_and_nothing_is_written(served, asset):
    resources, instance = served
    store = resources["lake"].lake()
    before = {spec.path: store.version(spec) for spec in (INFERENCE_EVENTS, DRIFT_REPORTS)}
    future = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=35)).isoformat()
    result = run_range([asset], DAYS[1], future, resources, instance)
    assert not result.success
    message = failure_message(result)
    # inference_events has no registered model here: the guard fired before that was even looked at.
    assert f"partition range end {future!r} is not a partition" in message
    assert f"{FEEDBACK_START} .. {today()}" in message and "Nothing was written" in message
    assert {spec.path: store.version(spec) for spec in (INFERENCE_EVENTS, DRIFT_REPORTS)} == before
    assert instance.get_materialized_partitions(asset.key) == set()


def test_a_reversed_range_is_refused_with_the_range_to_launch_instead(served):
    resources, instance = served
    result = run_range([drift_report], DAYS[2], DAYS[0], resources, instance)
    assert not result.success
    message = failure_message(result)
    assert f"partition range {DAYS[2]} .. {DAYS[0]} is reversed" in message
    assert f"launch {DAYS[0]} .. {DAYS[2]} instead" in message
    assert not resources["lake"].lake().exists(DRIFT_REPORTS)


def test_a_valid_range_is_refused_with_the_way_to_run_it(served):
    # Each day's materialization carries its own figures only when each day is its own run, so the
    # daily assets refuse a multi-day range and say how to run it (a backfill: one run per day).
    resources, instance = served
    result = run_range([drift_report], DAYS[0], DAYS[2], resources, instance)
    assert "launch a backfill: one run per day" in failure_message(result)
    assert not resources["lake"].lake().exists(DRIFT_REPORTS)
    assert not instance.get_materialized_partitions(drift_report.key)


def test_dataset_ranges_are_refused_unknown_reversed_or_several(served):
    resources, instance = served
    instance.add_dynamic_partitions("datasets", ["second"])
    # Dagster itself refuses a dynamic range naming a key the instance lacks, before the run starts.
    with pytest.raises(dg.DagsterInvalidInvocationError, match="never-added"):
        run_range([splits], "prompts", "never-added", resources, instance)
    reversed_range = failure_message(run_range([splits], "second", "prompts", resources, instance))
    assert "second .. prompts is reversed" in reversed_range
    several = failure_message(run_range([splits], "prompts", "second", resources, instance))
    assert "handles one partition per run, but this run asks for 2 (prompts, second)" in several
    assert not resources["lake"].lake().exists(SPLITS)
