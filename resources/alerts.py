"""Where failure alerts go: a Slack-compatible incoming webhook, or nowhere (failures are still recorded)."""

import dagster as dg
from pydantic import Field


class AlertsResource(dg.ConfigurableResource):
    """``webhook_url`` (e.g. ``EnvVar("CRUCIBLE_ALERT_WEBHOOK")``) receives ``{"text": ...}`` per failed run;
    ``dagster_url`` makes the message link to the run in the web UI."""

    webhook_url: str | None = Field(None, description="Slack-compatible incoming webhook; None records only.")
    dagster_url: str | None = Field(None, description="Base URL of the Dagster web UI, for links in alerts.")
    timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for the webhook.")
