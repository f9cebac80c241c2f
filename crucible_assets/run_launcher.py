"""Dagster's default run launcher, plus the health check that lets run monitoring fail a killed run.

``DefaultRunLauncher`` cannot tell the monitoring daemon whether a run's worker is alive
(``supports_check_run_worker_health`` is False), so a run whose process was killed stays STARTED
for ever. Every run worker records its pid in the run's first engine event (in process, multiprocess
or launched through a code server); this launcher reports the run FAILED once that process is gone.
It assumes the daemon and the run workers share one machine, as in the embedded default; a
deployment that runs workers elsewhere uses that platform's launcher (Docker, Kubernetes, ECS), which
has its own health check.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's worker process and when it was recorded, from its first engine event."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        pid = data.metadata.get("pid") if data and data.metadata else None
        if pid is not None:
            return int(pid.value), record.timestamp
    return None


def process_is_alive(pid: int, recorded_at: float) -> bool:
    """Whether ``pid`` is a live (not zombie) process that existed when ``recorded_at`` was logged."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return True
    fields = stat.read_text().rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    # A process started after the pid was recorded is another process that reused the number.
    ticks = os.sysconf("SC_CLK_TCK")
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime"))
    started = boot + int(fields[19]) / ticks
    return started <= recorded_at + 1.0


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers the monitoring daemon can health-check on this machine."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        found = run_worker_pid(self._instance, run.run_id)
        if found is None:
            # The worker has not logged its pid yet (it is starting): nothing to judge.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker pid not recorded yet")
        pid, recorded_at = found
        if process_is_alive(pid, recorded_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed) while the run was STARTED")
