"""A run whose process is killed ends FAILURE: the shipped instance config (run monitoring on, the
health-checking launcher) on a real SQLite instance, a real run in a subprocess, a real SIGKILL and
Dagster's own run-monitoring iteration."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.monitoring import execute_run_monitoring_iteration

from crucible_assets.demo import _prepare_home
from crucible_assets.instance import INSTANCE_CONFIG, ensure_instance_config
from crucible_assets.run_launcher import LocalRunLauncher, run_worker_pid

CHILD = textwrap.dedent("""
    import time, dagster as dg

    @dg.asset
    def slow_asset() -> None:
        time.sleep(120)

    with dg.DagsterInstance.get() as instance:
        dg.materialize([slow_asset], instance=instance)
""")


def monitor(instance: dg.DagsterInstance) -> None:
    with WorkspaceProcessContext(instance, None) as context:
        errors = [e for e in execute_run_monitoring_iteration(context, logging.getLogger("test")) if e]
    assert not errors


def wait_for_started_run(instance: dg.DagsterInstance, child: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read()
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        if runs and run_worker_pid(instance, runs[0].run_id):
            return runs[0].run_id
        time.sleep(0.2)
    raise AssertionError("the run never reached STARTED")


def test_a_killed_run_is_marked_failed_by_run_monitoring(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    ensure_instance_config(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    child = subprocess.Popen([sys.executable, "-c", CHILD], env={**os.environ, "DAGSTER_HOME": str(home)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with dg.DagsterInstance.get() as instance:
            assert instance.run_monitoring_enabled and isinstance(instance.run_launcher, LocalRunLauncher)
            run_id = wait_for_started_run(instance, child)
            assert run_worker_pid(instance, run_id)[0] == child.pid
            monitor(instance)  # the worker is alive: the run must stay STARTED
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # what broke
            monitor(instance)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            messages = [r.message for r in instance.all_logs(run_id) if r.message]
            assert any(f"run worker process {child.pid} is gone" in m for m in messages)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_zombie_or_reused_pid_counts_as_gone(tmp_path):
    from crucible_assets.run_launcher import process_is_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = time.time()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited but not reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    assert not process_is_alive(child.pid, recorded)
    child.wait()
    assert not process_is_alive(child.pid, recorded)
    assert process_is_alive(os.getpid(), time.time())
    assert not process_is_alive(os.getpid(), 0.0)  # this process started after "recorded": another process


def test_the_shipped_config_is_written_then_merged_without_clobbering(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    assert ensure_instance_config(fresh) == ["telemetry", "run_launcher", "run_monitoring", "concurrency"]
    assert (fresh / "dagster.yaml").read_text() == INSTANCE_CONFIG.read_text()
    assert ensure_instance_config(fresh) == []

    user = tmp_path / "user"
    user.mkdir()
    mine = "# my settings\nrun_monitoring:\n  enabled: true\n  poll_interval_seconds: 5\ntelemetry:\n  enabled: true\n"
    (user / "dagster.yaml").write_text(mine)
    assert ensure_instance_config(user) == ["run_launcher", "concurrency"]
    text = (user / "dagster.yaml").read_text()
    assert text.startswith(mine)
    merged = yaml.safe_load(text)
    assert merged["run_monitoring"] == {"enabled": True, "poll_interval_seconds": 5}
    assert merged["telemetry"] == {"enabled": True}
    with dg.DagsterInstance.from_config(str(user)) as instance:
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds == 5
        assert isinstance(instance.run_launcher, LocalRunLauncher)

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CRUCIBLE_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    _prepare_home(tmp_path / "demo")
    demo_config = yaml.safe_load((tmp_path / "demo" / "dagster_home" / "dagster.yaml").read_text())
    assert demo_config["run_monitoring"]["enabled"] is True
