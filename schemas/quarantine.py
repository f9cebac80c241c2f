"""Schema of the quarantine table: every row that failed validation, with why and where from."""

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.engines.pandas_engine import Date
from pandera.typing import Series

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "us", "UTC"]


class QuarantineSchema(pa.DataFrameModel):
    table: Series[str] = pa.Field(str_length={"min_value": 1})
    source: Series[str]
    row_hash: Series[str] = pa.Field(str_length={"min_value": 1})
    reason: Series[str] = pa.Field(str_length={"min_value": 1})
    record: Series[str]
    day: Series[Date]
    quarantined_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
