"""Schema of the quarantine table: every row that failed validation, with why and where from.

Version history (``QUARANTINE.schema_version``; steps in ``crucible/migrations.py``):
1. the columns up to ``quarantined_at``;
2. adds ``origin``, the scope a write replaces (``datasets/examples[dataset=gsm8k]``), nullable;
3. back-fills ``origin`` of rows written before version 2.
"""

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
    origin: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
