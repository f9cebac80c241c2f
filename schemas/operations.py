"""Schemas of the operations group: failed runs and whether someone was alerted."""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp


class RunFailuresSchema(pa.DataFrameModel):
    run_id: Series[str] = pa.Field(str_length={"min_value": 1})
    job_name: Series[str]
    failed_at: Series[UtcTimestamp]
    error: Series[str]
    failed_steps: Series[str]
    tags: Series[str]
    alerted: Series[bool]
    alert_error: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["run_id"]
