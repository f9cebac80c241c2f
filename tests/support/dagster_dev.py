"""A real ``dagster dev`` (webserver + daemon) for tests, in its own process group, plus a GraphQL helper.

    with running_dagster_dev(dagster_home, env={"CRUCIBLE_HOME": str(home)}, log_dir=tmp_path) as dev:
        dev.graphql("{ version }")

The server loads ``workspace.yaml`` from the repository root, so it serves the same definitions as
``make ui``. Stopping signals the whole process group: stopping ``dagster dev`` by its own pid leaves
the code server and run workers running (see /work/shared/DAGSTER_NOTES.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"

WORKSPACE_STATUS = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""

DAEMON_HEALTH = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"


class GraphQLError(RuntimeError):
    """The webserver answered a GraphQL request with errors (or not at all)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60) -> dict:
    """POST ``query`` to ``<url>/graphql`` and return its ``data``; raises GraphQLError naming the query's
    first line and the server's errors when the answer carries any."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    first_line = next((line.strip() for line in query.strip().splitlines() if line.strip()), "")[:80]
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        raise GraphQLError(f"GraphQL {first_line!r}: HTTP {error.code}: {error.read().decode()[:2000]}") from None
    if answer.get("errors"):
        raise GraphQLError(f"GraphQL {first_line!r}: {json.dumps(answer['errors'])[:2000]}")
    return answer["data"]


@dataclass
class DagsterDev:
    """A running ``dagster dev``: its base URL, process and log file."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60) -> dict:
        """Run a GraphQL query or mutation against this webserver (see :func:`graphql`)."""
        return graphql(self.url, query, variables, timeout)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the webserver's and daemon's combined output, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def wait_until_ready(self, timeout: float, daemons: bool = True) -> None:
        """Wait until every code location is loaded and (``daemons``) every required daemon is healthy;
        raises with the log's tail when the server exits, a location fails to load, or time runs out."""
        deadline = time.monotonic() + timeout
        waiting_for = "the webserver to answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with code {self.process.returncode} while waiting for "
                                   f"{waiting_for}; its output ends with:\n{self.log_tail()}")
            try:
                waiting_for = _not_ready_yet(self, daemons)
            except (OSError, GraphQLError) as error:  # not listening yet, or answering 503 while it starts
                waiting_for = f"the webserver to answer ({error})"
            if waiting_for is None:
                return
            time.sleep(1.0)
        raise TimeoutError(f"dagster dev at {self.url} not ready after {timeout:.0f}s: still waiting for "
                           f"{waiting_for}; its output ends with:\n{self.log_tail()}")


def _not_ready_yet(dev: DagsterDev, daemons: bool) -> str | None:
    with urllib.request.urlopen(f"{dev.url}/server_info", timeout=5) as response:
        response.read()
    workspace = dev.graphql(WORKSPACE_STATUS, timeout=10)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise RuntimeError(f"dagster dev could not load {WORKSPACE}: {workspace.get('message')}")
    entries = workspace["locationEntries"]
    for entry in entries:
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise RuntimeError(f"code location {entry['name']} failed to load:\n{loaded['message']}")
    pending = [entry["name"] for entry in entries if entry["loadStatus"] != "LOADED" or not entry["locationOrLoadError"]]
    if not entries or pending:
        return f"code locations to load ({', '.join(pending) or 'none listed yet'})"
    if daemons:
        statuses = dev.graphql(DAEMON_HEALTH, timeout=10)["instance"]["daemonHealth"]["allDaemonStatuses"]
        unhealthy = [s["daemonType"] for s in statuses if s["required"] and not s["healthy"]]
        if unhealthy:
            return f"daemons to report healthy ({', '.join(unhealthy)})"
    return None


def stop_process_group(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the group ``process`` leads (dagster dev shuts its children down), SIGKILL what is left."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Children (code server, run workers) may outlive the leader: clear the whole group.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def running_dagster_dev(dagster_home: Path, env: Mapping[str, str] | None = None, log_dir: Path | None = None,
                        workspace: Path = WORKSPACE, ready_timeout: float = 240,
                        wait_for_daemons: bool = True) -> Iterator[DagsterDev]:
    """Start ``dagster dev -w <workspace> -h 127.0.0.1 -p <free port>`` on ``dagster_home`` with ``env`` on top
    of this process's environment, wait until it serves the loaded workspace (and healthy daemons), yield
    it, then stop its whole process group. Its output goes to ``<log_dir>/dagster_dev.log``."""
    port = free_port()
    log_path = Path(log_dir or dagster_home) / "dagster_dev.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process_env = {**os.environ, **dict(env or {}), "DAGSTER_HOME": str(dagster_home)}
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=workspace.parent, env=process_env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    dev = DagsterDev(f"http://127.0.0.1:{port}", process, log_path)
    try:
        dev.wait_until_ready(ready_timeout, daemons=wait_for_daemons)
        yield dev
    finally:
        stop_process_group(process)
