"""Schemas of the monitoring group: baseline snapshots (reference distributions) and daily drift reports."""

import pandera.pandas as pa
from pandera.engines.pandas_engine import Date
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp

# Every detector of crucible.monitoring.drift (kept here so that the schema does not import the core).
DRIFT_DETECTORS = ["ks", "psi", "chi2", "js", "two_proportion", "mmd"]
BASELINE_KINDS = ["numeric", "categorical", "rate", "embedding"]


class BaselinesSchema(pa.DataFrameModel):
    """One feature of a baseline snapshot. ``values`` is JSON: a list of numbers (numeric), counts per
    category (categorical), ``{"successes", "trials"}`` (rate) or reference texts (embedding).
    Schema v2 added the snapshot columns: rows of one snapshot share ``snapshot_id`` and
    ``table_versions`` (JSON ``{table: Delta version read}``), which pin it to what it was built from."""

    baseline_id: Series[str] = pa.Field(str_length={"min_value": 1})
    feature: Series[str]
    source: Series[str]
    values: Series[str]
    num_values: Series[int] = pa.Field(ge=1)
    created_at: Series[UtcTimestamp]
    snapshot_id: Series[str] = pa.Field(nullable=True)
    kind: Series[str] = pa.Field(nullable=True, isin=BASELINE_KINDS)
    table_versions: Series[str] = pa.Field(nullable=True)
    trigger: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["baseline_id"]


class DriftReportsSchema(pa.DataFrameModel):
    """One detector's verdict on one feature of one day; schema v2 added ``explanation``."""

    day: Series[Date]
    detector: Series[str] = pa.Field(isin=DRIFT_DETECTORS)
    feature: Series[str]
    statistic: Series[float] = pa.Field(ge=0)
    p_value: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    threshold: Series[float]
    drifted: Series[bool]
    baseline_id: Series[str]
    num_current: Series[int] = pa.Field(ge=0)
    num_baseline: Series[int] = pa.Field(ge=0)
    explanation: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["day", "detector", "feature"]
