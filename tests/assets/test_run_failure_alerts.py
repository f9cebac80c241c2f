"""The run-failure sensor records a failed run in the lake and alerts a real webhook on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from crucible.lake import DeltaLake
from crucible_assets.operations import run_failure_alerts
from resources.alerts import AlertsResource
from resources.lake import LakeResource
from schemas import RUN_FAILURES


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/alerts", received
    server.shutdown()


@dg.op
def load_config():
    raise ValueError("recipe sft_tiny: learning_rate must be > 0, got -1")


@dg.job
def broken_job():
    load_config()


def _failure_context(instance, resources):
    result = broken_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(event for event in result.all_events if event.event_type == dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(sensor_name=run_failure_alerts.name, dagster_event=failure,
                                              dagster_instance=instance, dagster_run=run,
                                              resources=resources).for_run_failure(), result.run_id


def test_a_failed_run_is_recorded_and_alerted(tmp_path, webhook):
    url, received = webhook
    lake = LakeResource(root=str(tmp_path / "lake"), artifacts_root=str(tmp_path / "artifacts"))
    with dg.DagsterInstance.ephemeral() as instance:
        context, run_id = _failure_context(instance, {"lake": lake, "alerts": AlertsResource(
            webhook_url=url, dagster_url="http://127.0.0.1:3000")})
        run_failure_alerts(context)
    assert len(received) == 1
    assert received[0]["run_id"] == run_id and received[0]["failed_steps"] == ["load_config"]
    assert "learning_rate must be > 0" in received[0]["text"]
    assert f"http://127.0.0.1:3000/runs/{run_id}" in received[0]["text"]
    rows = DeltaLake(lake.root).read(RUN_FAILURES)
    assert rows[["run_id", "job_name", "failed_steps", "alerted"]].values.tolist() == \
        [[run_id, "broken_job", "load_config", True]]
    assert "ValueError: recipe sft_tiny: learning_rate must be > 0" in rows["error"].iloc[0]


def test_an_unreachable_webhook_still_records_the_failure(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    lake = LakeResource(root=str(tmp_path / "lake"), artifacts_root=str(tmp_path / "artifacts"))
    with dg.DagsterInstance.ephemeral() as instance:
        context, run_id = _failure_context(instance, {"lake": lake, "alerts": AlertsResource(
            webhook_url=f"http://127.0.0.1:{closed}/hook", timeout_s=2)})
        run_failure_alerts(context)
    row = DeltaLake(lake.root).read(RUN_FAILURES).iloc[0]
    assert row["run_id"] == run_id and not row["alerted"]
    assert f"127.0.0.1:{closed}/hook cannot be reached" in row["alert_error"]
