"""Schemas of the deployment group: rollouts of registered versions and the probes of live deployments."""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp

DEPLOYMENT_STATES = ("pending", "deploying", "canary", "active", "rolling_back", "rolled_back", "failed",
                     "terminated")
TARGETS = ("local", "vllm", "tgi", "kubernetes")
STRATEGIES = ("replace", "blue_green", "canary", "ab")


class DeploymentsSchema(pa.DataFrameModel):
    """One row per deployment of a registered version; ``history`` is the JSON list of its state changes."""

    deployment_id: Series[str] = pa.Field(str_length={"min_value": 1})
    model_name: Series[str] = pa.Field(str_length={"min_value": 1})
    model_version: Series[int] = pa.Field(ge=1)
    target: Series[str] = pa.Field(isin=list(TARGETS))
    strategy: Series[str] = pa.Field(isin=list(STRATEGIES))
    state: Series[str] = pa.Field(isin=list(DEPLOYMENT_STATES))
    traffic_percent: Series[float] = pa.Field(ge=0, le=100)
    previous_version: Series[int] = pa.Field(ge=1, nullable=True)
    artifact_uri: Series[str]
    endpoint: Series[str] = pa.Field(nullable=True)
    backend_url: Series[str] = pa.Field(nullable=True)
    pid: Series[int] = pa.Field(nullable=True)
    reason: Series[str] = pa.Field(nullable=True)
    config: Series[str]
    history: Series[str]
    created_at: Series[UtcTimestamp]
    updated_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["deployment_id"]


class DeploymentHealthSchema(pa.DataFrameModel):
    """One probe of one live deployment: liveness (/healthz), readiness (/readyz), latency and /metrics counters."""

    deployment_id: Series[str] = pa.Field(str_length={"min_value": 1})
    probed_at: Series[UtcTimestamp]
    url: Series[str]
    state: Series[str] = pa.Field(isin=list(DEPLOYMENT_STATES))
    live: Series[bool]
    ready: Series[bool]
    latency_ms: Series[float] = pa.Field(ge=0, nullable=True)
    requests_total: Series[float] = pa.Field(ge=0, nullable=True)
    errors_total: Series[float] = pa.Field(ge=0, nullable=True)
    error: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["deployment_id", "probed_at"]
