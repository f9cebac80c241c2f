"""The demo leaves its sensor evaluations in the instance as the daemon would: a tick per evaluation,
the requested runs on it, and the cursor a sensor switched on later continues from."""

import time

import dagster as dg


def test_recorded_ticks_are_what_the_ui_reads(tmp_path, monkeypatch):
    from dagster._core.scheduler.instigation import TickStatus
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    from crucible_assets.demo import WORKSPACE, record_sensor_ticks

    monkeypatch.setenv("CRUCIBLE_HOME", str(tmp_path / "home"))
    now = time.time()
    ticks = [
        {"sensor": "drift_retraining_sensor", "timestamp": now - 5, "end_timestamp": now - 4, "cursor": "42",
         "run_ids": ["0f3d9a52-1b6e-4c1e-9d0e-2a7f7c2b9e11"], "run_keys": ["retrain-2026-10-28-2026-11-03"],
         "skip_reason": None},
        {"sensor": "quality_retraining_sensor", "timestamp": now - 3, "end_timestamp": now - 2, "cursor": "43",
         "run_ids": [], "run_keys": [], "skip_reason": "2026-10-28..2026-11-03: retraining run exists already"},
    ]
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        assert record_sensor_ticks(instance, ticks) == 2
        assert record_sensor_ticks(instance, ticks[:1]) == 1  # a second demo run updates the same sensor state
        with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(WORKSPACE)])) as context:
            [entry] = context.create_request_context().get_code_location_entries().values()
            [repo] = entry.code_location.get_repositories().values()
            drift = repo.get_sensor("drift_retraining_sensor")
            quality = repo.get_sensor("quality_retraining_sensor")
            drift_ticks = instance.get_ticks(drift.get_remote_origin_id(), drift.selector_id)
            quality_ticks = instance.get_ticks(quality.get_remote_origin_id(), quality.selector_id)
            state = instance.get_instigator_state(drift.get_remote_origin_id(), drift.selector_id)
    assert [t.status for t in drift_ticks] == [TickStatus.SUCCESS, TickStatus.SUCCESS]
    assert drift_ticks[0].run_keys == ["retrain-2026-10-28-2026-11-03"] and drift_ticks[0].run_ids == ticks[0]["run_ids"]
    assert [t.status for t in quality_ticks] == [TickStatus.SKIPPED]
    assert "exists already" in quality_ticks[0].skip_reason
    assert state.instigator_data.cursor == "42" and not state.is_running


def test_the_demo_days_are_a_completed_backfill(lifecycle):
    from dagster._core.execution.backfill import BulkActionStatus

    [backfill] = lifecycle.instance.get_backfills()
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    runs = lifecycle.instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
    assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(lifecycle.days)
    data = backfill.asset_backfill_data
    assert data.materialized_subset == data.target_subset
