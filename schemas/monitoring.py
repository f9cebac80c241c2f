"""Schemas of the monitoring group: reference distributions and daily drift reports."""

import pandera.pandas as pa
from pandera.engines.pandas_engine import Date
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp


class BaselinesSchema(pa.DataFrameModel):
    baseline_id: Series[str] = pa.Field(str_length={"min_value": 1})
    feature: Series[str]
    source: Series[str]
    values: Series[str]
    num_values: Series[int] = pa.Field(ge=1)
    created_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["baseline_id"]


class DriftReportsSchema(pa.DataFrameModel):
    day: Series[Date]
    detector: Series[str] = pa.Field(isin=["ks", "psi"])
    feature: Series[str]
    statistic: Series[float] = pa.Field(ge=0)
    p_value: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    threshold: Series[float]
    drifted: Series[bool]
    baseline_id: Series[str]
    num_current: Series[int] = pa.Field(ge=0)
    num_baseline: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["day", "detector"]
