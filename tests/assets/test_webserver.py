"""The web UI's server, started for real on 127.0.0.1, serves the asset graph over GraphQL."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_webserver_lists_assets_and_their_dependencies(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "CRUCIBLE_HOME": str(tmp_path / "crucible")}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                response = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=5)
                data = response.json().get("data") or {}
                if data.get("assetNodes"):
                    nodes = data["assetNodes"]
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert nodes, "webserver did not serve the asset graph within 120 s"
        graph = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        assert graph["training/sft_checkpoint"] == {"datasets/examples", "feedback/curated_examples"}
        assert graph["monitoring/drift_report"] >= {"feedback/inference_events", "feedback/quality",
                                                    "feedback/embeddings", "feedback/signals"}
        assert graph["registry/registered_model"] == {"evaluation/eval_results"}
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert groups["feedback/inference_events"] == "feedback"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
