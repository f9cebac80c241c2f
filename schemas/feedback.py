"""Schemas of the feedback group: what the deployed model was asked and answered."""

import pandera.pandas as pa
from pandera.engines.pandas_engine import Date
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp

EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


class InferenceEventsSchema(pa.DataFrameModel):
    event_id: Series[str] = pa.Field(str_length={"min_value": 1})
    day: Series[Date]
    timestamp: Series[UtcTimestamp]
    model_name: Series[str]
    model_version: Series[int] = pa.Field(ge=1)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    response: Series[str]
    prompt_tokens: Series[int] = pa.Field(ge=0)
    response_tokens: Series[int] = pa.Field(ge=0)
    latency_ms: Series[float] = pa.Field(ge=0)
    pii_redactions: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["event_id"]

    @pa.check("prompt", "response", name="no_unscrubbed_email")
    def no_email(cls, text: Series[str]) -> Series[bool]:
        return ~text.str.contains(EMAIL_PATTERN, regex=True)
