"""A daily backfill launched as the UI launches it: `dagster dev` (webserver + daemon) on a real instance, the
``launchPartitionBackfill`` mutation of the Materialize dialog, the backfill daemon's runs, and the outcome in the
instance and the lake."""

import time
from pathlib import Path

import dagster as dg
import pytest

import schemas
from tests.support.dagster_dev import DagsterDev, running_dagster_dev

pytestmark = pytest.mark.slow

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
EVENTS_PER_DAY = 6
# Small enough for 2 busy cores: one tiny training step, then 4 GSM8K items (the one dataset loaded).
TRAINING = {"hyperparameters": {"max_steps": 1, "eval_every": 0, "checkpoint_every": 0}, "dataset_limit": 8}
EVALUATION = {"benchmarks": ["gsm8k"], "limit": 4, "max_new_tokens": 8}

LAUNCH = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status numPartitions
      error { message }
      runs(limit: 50) { runId status tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""

PARTITION_HEALTH = """
query PartitionHealth($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetPartitionStatuses { ... on TimePartitionStatuses { ranges { status startKey endKey } } }
    }
  }
}
"""

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def prepare_registered_model(home: Path, dagster_home: Path) -> None:
    """GSM8K → one tiny training → evaluation → registry through the real jobs, in process, on the instance
    dagster dev opens next (and closed before it does: SQLite is not for several writers at once)."""
    from crucible_assets.definitions import build_defs, default_resources
    from crucible_assets.evaluation.assets import eval_results
    from crucible_assets.jobs import dataset_ingest_job, retrain_job
    from crucible_assets.partitions import datasets_partitions
    from crucible_assets.training.assets import sft_checkpoint

    resources = default_resources()  # from CRUCIBLE_HOME, as the definitions dagster dev loads read it
    assert resources["lake"].root == f"{home}/lake"
    defs = build_defs(resources)
    retrain_config = {"ops": {sft_checkpoint.key.to_python_identifier(): {"config": TRAINING},
                              eval_results.key.to_python_identifier(): {"config": EVALUATION}}}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, ["gsm8k"])
        for job, settings in ((dataset_ingest_job, {"partition_key": "gsm8k"}),
                              (retrain_job, {"run_config": retrain_config})):
            result = defs.resolve_job_def(job.name).execute_in_process(instance=instance, **settings)
            assert result.success, f"{job.name} failed while preparing the instance"


def wait_for_backfill(dev: DagsterDev, backfill_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    backfill: dict = {}
    while time.monotonic() < deadline:
        backfill = dev.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] in FINISHED:
            return backfill
        time.sleep(3)
    runs = [(run["runId"], run["status"]) for run in backfill.get("runs", [])]
    raise AssertionError(f"backfill {backfill_id} still {backfill.get('status')} after {timeout:.0f}s; runs: {runs}; "
                         f"dagster dev output ends with:\n{dev.log_tail()}")


def failure_messages(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    return [f"{run_id}: {record.message}" for run_id in run_ids for record in instance.all_logs(run_id)
            if record.is_dagster_event and record.dagster_event.is_failure and record.message]


def test_a_ui_backfill_of_three_days_runs_one_run_per_day_through_the_daemon(tmp_path, monkeypatch):
    from crucible_assets.feedback.assets import inference_events
    from crucible_assets.instance import ensure_instance_config
    from crucible_assets.monitoring.assets import drift_report
    from crucible_assets.run_launcher import run_worker_pid
    from resources.lake import LakeResource

    one_run_per_day = dg.BackfillPolicy.multi_run(1)
    for asset in (inference_events, drift_report):
        assert asset.backfill_policy == one_run_per_day, (
            f"{asset.key.to_user_string()} has {asset.backfill_policy}: this test expects one run per day")

    home = tmp_path / "crucible"
    dagster_home = home / "dagster_home"
    monkeypatch.setenv("CRUCIBLE_HOME", str(home))
    for variable in ("CRUCIBLE_LAKE_ROOT", "CRUCIBLE_ARTIFACTS_ROOT", "CRUCIBLE_DATASET_DROP"):
        monkeypatch.delenv(variable, raising=False)
    ensure_instance_config(dagster_home)  # the shipped launcher and run monitoring, as `make ui` sets them up
    started = time.monotonic()
    prepare_registered_model(home, dagster_home)
    prepared = time.monotonic() - started

    keys = [inference_events.key, drift_report.key]
    # What a person picks in the Materialize dialog: both daily assets, three days; plus test-sized config.
    params = {
        "assetSelection": [{"path": key.path} for key in keys],
        "partitionNames": DAYS,
        "title": "three days of feedback and drift",
        "runConfigData": {
            "ops": {inference_events.key.to_python_identifier(): {"config": {"events_per_day": EVENTS_PER_DAY}}},
            "resources": {"drift_policy": {"config": {"embedding_drift": False}}},  # no sentence encoder to load
            "execution": {"config": {"in_process": {}}},  # one process per run, not one per step
        },
    }
    started = time.monotonic()
    with running_dagster_dev(dagster_home, env={"CRUCIBLE_HOME": str(home)}, log_dir=tmp_path) as dev:
        ready = time.monotonic() - started
        launched = dev.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        backfill = wait_for_backfill(dev, backfill_id, timeout=360)
        health = {key: dev.graphql(PARTITION_HEALTH, {"key": {"path": key.path}})["assetNodeOrError"]
                  ["assetPartitionStatuses"]["ranges"] for key in keys}
    elapsed = time.monotonic() - started
    print(f"in-process preparation {prepared:.0f}s; dagster dev ready in {ready:.0f}s; backfill done and server "
          f"stopped {elapsed:.0f}s after start")

    runs_seen = {run["runId"]: run for run in backfill["runs"]}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert backfill["status"] == "COMPLETED_SUCCESS", (
            backfill, failure_messages(instance, list(runs_seen)), (tmp_path / "dagster_dev.log").read_text()[-4000:])
        assert backfill["numPartitions"] == len(DAYS)

        # One run per day, each for both assets of that day, launched by the daemon for this backfill.
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert set(runs_seen) == {run.run_id for run in runs} and len(runs) == len(DAYS)
        run_of_day = {}
        for run in runs:
            start, end = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
            assert start == end and run.status == dg.DagsterRunStatus.SUCCESS, (run.run_id, start, end, run.status)
            assert run.asset_selection == set(keys)
            # Launched through the shipped LocalRunLauncher: the worker's pid, which run monitoring checks, is
            # recorded, and run monitoring (polling while the runs ran) left these live runs alone.
            assert run_worker_pid(instance, run.run_id) is not None
            run_of_day[start] = run.run_id
        assert sorted(run_of_day) == DAYS

        # Each day's partition is materialized by that day's run, with that day's own figures.
        for key in keys:
            assert set(DAYS) <= instance.get_materialized_partitions(key)
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=DAYS), limit=50).records
            assert sorted(record.partition_key for record in records) == DAYS, f"{key}: one materialization a day"
            for record in records:
                assert record.run_id == run_of_day[record.partition_key]
                metadata = {name: value.value for name, value in record.asset_materialization.metadata.items()}
                if key == inference_events.key:
                    assert metadata["mode"] == "simulated" and metadata["dagster/row_count"] == EVENTS_PER_DAY
                    assert metadata["model_version"] == 1
                else:
                    assert metadata["day"] == record.partition_key and metadata["baseline"]

    # The UI's partition health bar shows the three days materialized.
    for key in keys:
        materialized = [r for r in health[key] if r["status"] == "MATERIALIZED"]
        assert [(r["startKey"], r["endKey"]) for r in materialized] == [(DAYS[0], DAYS[-1])], health[key]

    # The lake holds each day's rows exactly once, although three runs wrote the same tables at once.
    lake = LakeResource(root=str(home / "lake")).lake()
    events = lake.read(schemas.INFERENCE_EVENTS)
    assert events["event_id"].is_unique
    assert {str(day): n for day, n in events.groupby("day").size().items()} == dict.fromkeys(DAYS, EVENTS_PER_DAY)
    reports = lake.read(schemas.DRIFT_REPORTS)
    assert sorted({str(day) for day in reports["day"]}) == DAYS
    assert not reports.duplicated(list(schemas.DRIFT_REPORTS.keys)).any()
