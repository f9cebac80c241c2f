"""Health probes of served versions: liveness (/healthz), readiness (/readyz), probe latency and /metrics
counters, and the health rows of live deployments."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import store_validated
from schemas import DEPLOYMENT_HEALTH


@dataclass(frozen=True)
class HealthProbe:
    url: str
    live: bool
    ready: bool
    latency_ms: float | None
    requests_total: float | None = None
    errors_total: float | None = None
    error: str | None = None


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def prometheus_totals(text: str) -> tuple[float | None, float | None]:
    """(requests, errors) summed over the ``*_total`` counters of a Prometheus exposition.

    A counter counts as errors when its name says so (``..._errors_total``); request counters are the
    other ``..._requests_total`` ones. Labels are summed over, so per-status counters add up.
    """
    requests = errors = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        metric = name.split("{", 1)[0]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if "error" in metric and metric.endswith("_total"):
            errors = (errors or 0.0) + value
        elif metric.endswith("requests_total"):
            requests = (requests or 0.0) + value
    return requests, errors


def probe(url: str, timeout: float = 2.0) -> HealthProbe:
    """Probe the server at ``url`` once; never raises, a failure is a probe with ``error`` set."""
    base = url.rstrip("/")
    started = time.perf_counter()
    try:
        live_status, _ = _get(f"{base}/healthz", timeout)
        latency = (time.perf_counter() - started) * 1000
        ready_status, _ = _get(f"{base}/readyz", timeout)
    except (OSError, urllib.error.URLError) as error:
        return HealthProbe(base, False, False, None, error=f"{type(error).__name__}: {error}")
    requests = errors = None
    try:
        status, text = _get(f"{base}/metrics", timeout)
        if status == 200:
            requests, errors = prometheus_totals(text)
    except (OSError, urllib.error.URLError):
        pass  # metrics are optional; liveness and readiness already answered
    return HealthProbe(base, live_status == 200, ready_status == 200, latency, requests, errors,
                       None if ready_status == 200 else f"/readyz answered {ready_status}")


class NotReady(RuntimeError):
    """A server that did not become ready in time, or whose process exited first."""


def wait_ready(url: str, timeout_s: float, process: subprocess.Popen | None = None, interval_s: float = 0.1,
               describe: Callable[[], str] = lambda: "") -> float:
    """Wait until ``url``/readyz answers 200; return the seconds it took. Raises :class:`NotReady` naming the
    url (and the process's exit code and ``describe()``, e.g. its log tail) when it exits or time runs out."""
    started = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise NotReady(f"server for {url} exited with code {process.returncode} before it was ready. "
                           f"{describe()}".strip())
        try:
            status, _ = _get(f"{url.rstrip('/')}/readyz", timeout=min(2.0, timeout_s))
            if status == 200:
                return time.monotonic() - started
        except (OSError, urllib.error.URLError):
            pass  # not listening yet
        if time.monotonic() - started > timeout_s:
            raise NotReady(f"server for {url} was not ready after {timeout_s:.0f}s. {describe()}".strip())
        time.sleep(interval_s)


def health_rows(probes: Iterable[tuple[str, str, HealthProbe]], at: pd.Timestamp | None = None) -> pd.DataFrame:
    """Rows of ``deployment/health`` for (deployment_id, state, probe) triples probed at ``at``."""
    at = at or pd.Timestamp.now(tz="UTC")
    rows = [{"deployment_id": deployment_id, "probed_at": at, "url": p.url, "state": state, "live": p.live,
             "ready": p.ready, "latency_ms": p.latency_ms, "requests_total": p.requests_total,
             "errors_total": p.errors_total, "error": p.error} for deployment_id, state, p in probes]
    return pd.DataFrame(rows, columns=DEPLOYMENT_HEALTH.columns)


def probe_live_deployments(lake: DeltaLake, timeout: float = 2.0) -> pd.DataFrame:
    """Probe the server of every live local deployment and store one ``deployment/health`` row each.

    Returns the rows written (empty when nothing is live).
    """
    from crucible.deploy.deployments import LIVE_STATES, list_deployments

    probes = []
    for deployment in list_deployments(lake, states=LIVE_STATES):
        url = deployment.backend_url or deployment.endpoint
        if url and deployment.target == "local":
            probes.append((deployment.deployment_id, deployment.state, probe(url, timeout)))
    rows = health_rows(probes)
    if not rows.empty:
        store_validated(lake, DEPLOYMENT_HEALTH, rows, source="health_monitor")
    return rows
