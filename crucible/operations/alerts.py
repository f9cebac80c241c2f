"""Failure records and alerts: what failed, why, and a webhook message for whoever is on call."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import store_validated
from schemas import RUN_FAILURES


@dataclass(frozen=True)
class RunFailure:
    run_id: str
    job_name: str
    failed_at: pd.Timestamp
    error: str
    failed_steps: list[str]
    tags: dict[str, str]
    dagster_url: str | None = None

    def message(self) -> str:
        steps = f" (steps: {', '.join(self.failed_steps)})" if self.failed_steps else ""
        link = f"\n{self.dagster_url}/runs/{self.run_id}" if self.dagster_url else ""
        return f"Crucible run {self.run_id[:8]} of {self.job_name} failed{steps}: {self.error}{link}"


class AlertError(RuntimeError):
    """The alert webhook could not be reached or refused the message."""


def send_webhook(url: str, failure: RunFailure, timeout_s: float = 10.0) -> None:
    """POST a Slack-compatible ``{"text": ...}`` message (plus the structured fields) to ``url``."""
    body = json.dumps({"text": failure.message(), "run_id": failure.run_id, "job_name": failure.job_name,
                       "error": failure.error, "failed_steps": failure.failed_steps}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status >= 300:
                raise AlertError(f"alert webhook {url} answered {response.status}")
    except urllib.error.HTTPError as error:
        raise AlertError(f"alert webhook {url} answered {error.code}: {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise AlertError(f"alert webhook {url} cannot be reached: {getattr(error, 'reason', error)}") from None


def record_failure(lake: DeltaLake, failure: RunFailure, alerted: bool, alert_error: str | None) -> None:
    """One row per failed run (keyed by run id, so a re-evaluated failure replaces its row)."""
    row = {"run_id": failure.run_id, "job_name": failure.job_name, "failed_at": failure.failed_at,
           "error": failure.error, "failed_steps": ",".join(failure.failed_steps),
           "tags": json.dumps(failure.tags, sort_keys=True), "alerted": alerted, "alert_error": alert_error}
    store_validated(lake, RUN_FAILURES, pd.DataFrame([row]), source=f"run {failure.run_id}")
